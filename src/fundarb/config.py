"""Run configuration: attrs classes, TOML load/dump via cattrs, config hash.

A config's identity is the sha256 of its canonical JSON (sorted keys, no
whitespace); reports, trade logs and promotion records carry it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs
import tomli_w
from cattrs.v import format_exception

from fundarb.core.market_guard import GuardLimits
from fundarb.core.risk import RiskLimits
from fundarb.core.strategy import CarryParams


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


def _finite(inst: Any, attr: attrs.Attribute, value: float, section: str = "") -> None:
    if not math.isfinite(value):
        raise ValueError(f"{section}{attr.name} must be a finite number, got {value}")


def _nonneg_in(section: str) -> Any:
    """A validator: a finite number >= 0, named ``section.field`` (top level: no prefix)."""
    prefix = f"{section}." if section else ""

    def check(inst: Any, attr: attrs.Attribute, value: float) -> None:
        _finite(inst, attr, value, prefix)
        if value < 0:
            raise ValueError(f"{prefix}{attr.name} must be >= 0, got {value}")
    return check


_nonneg = _nonneg_in("")


@attrs.frozen
class VenueConfig:
    """One account: a ccxt exchange id and unified symbol, and its cost models.

    Fees are fractions of notional. Half spread (bp of mid) is drawn per fill
    uniformly in [half_spread_bp_min, half_spread_bp_max] when the feed gives
    only a mid; impact adds ``impact_bp_per_btc`` bp per BTC of the fill.
    ``depth_btc`` is what one quote offers; larger orders fill partly and the
    rest waits for the next quotes until ``order_ttl_seconds``. Latency is
    lognormal with median ``latency_ms_median`` and log-sd ``latency_sigma``.
    Maintenance margin is not set here: the venue's margin tiers define it
    (``fundarb.venues.margin_tiers``, docs/margin.md).
    """

    exchange: str
    symbol: str
    taker_fee: float = attrs.field(default=0.001, validator=_nonneg)
    maker_fee: float = attrs.field(default=0.001, validator=_nonneg)
    half_spread_bp_min: float = attrs.field(default=0.1, validator=_nonneg)
    half_spread_bp_max: float = attrs.field(default=0.5, validator=_nonneg)
    impact_bp_per_btc: float = attrs.field(default=0.5, validator=_nonneg)
    depth_btc: float = attrs.field(default=5.0, validator=_nonneg)
    latency_ms_median: float = attrs.field(default=50.0, validator=_nonneg)
    latency_sigma: float = attrs.field(default=0.5, validator=_nonneg)
    order_ttl_seconds: float = attrs.field(default=600.0, validator=_nonneg)
    liquidation_fee_rate: float = attrs.field(default=0.0125, validator=_nonneg)
    max_venue_leverage: float = attrs.field(default=20.0, validator=_nonneg)
    borrow_rate_annual: float = attrs.field(default=0.05, validator=_nonneg)

    def __attrs_post_init__(self) -> None:
        if self.half_spread_bp_max < self.half_spread_bp_min:
            raise ValueError("half_spread_bp_max must be >= half_spread_bp_min")
        if self.depth_btc <= 0:
            raise ValueError("depth_btc must be > 0")


def _settlement_tolerance(inst: Any, attr: attrs.Attribute, value: float) -> None:
    _finite(inst, attr, value, "data.")
    if not 0 <= value < 1800:
        raise ValueError(f"data.{attr.name} must be >= 0 and under 1800 (half an hour), got {value}")


@attrs.frozen
class DataConfig:
    """The history window and how raw venue data is taken in.

    A funding stamp within ``settlement_tolerance_seconds`` of its scheduled
    instant is that settlement (venues stamp a few ms late); further off, it
    is an error naming the row. The default is left out of the canonical
    JSON, so a config without the field keeps the hash it had before it existed.
    """

    start: str = "2021-07-01"
    end: str = "2024-07-01"
    max_price_gap_hours: float = attrs.field(default=6.0, validator=_nonneg)
    settlement_tolerance_seconds: float = attrs.field(default=1.0, validator=_settlement_tolerance)


@attrs.frozen
class TransferConfig:
    delay_minutes: float = attrs.field(default=60.0, validator=_nonneg)
    fee: float = attrs.field(default=1.0, validator=_nonneg)


def _run_name(inst: Any, attr: attrs.Attribute, value: str) -> None:
    # the name becomes a folder under runs/: keep it a plain file name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value or ""):
        raise ValueError(f"name must be letters, digits, '_', '.', '-' (at most 64), got {value!r}")


def _scenario_finite(inst: Any, attr: attrs.Attribute, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"scenario.{attr.name} must be a finite number, got {value}")


def _shock_return(inst: Any, attr: attrs.Attribute, value: float) -> None:
    _scenario_finite(inst, attr, value)
    if value <= -1:
        raise ValueError(f"scenario.{attr.name} must be > -1 (a fall of 100% leaves no price), got {value}")


def _shock_after_days(inst: Any, attr: attrs.Attribute, value: float) -> None:
    _scenario_finite(inst, attr, value)
    if value < 0:
        raise ValueError(f"scenario.{attr.name} must be >= 0 (days after the first hour of the history), got {value}")


def _description(inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise ValueError(f"scenario.{attr.name} must not be empty (say what is real and what is changed)")


@attrs.frozen
class Scenario:
    """A stress scenario: the real history with stated changes (``apply_scenario``
    in ``fundarb.data.scenario`` applies it; the report lists it in its sources).

    Funding, per settlement of ``interval_hours``:
    ``rate' = rate * funding_scale + funding_shift_apr * interval_hours / 8760``.
    Shock: spot and perp closes at and after the hour ``floor(shock_after_days
    * 24)`` hours after the history's first hour are multiplied by
    ``1 + shock_return``: a permanent level jump within one hour, basis kept,
    funding rates unchanged. Without the section (``Config.scenario is None``)
    the history is used as it is and the config hash is unchanged.
    """

    description: str = attrs.field(validator=_description)
    funding_scale: float = attrs.field(default=1.0, validator=_scenario_finite)
    funding_shift_apr: float = attrs.field(default=0.0, validator=_scenario_finite)
    shock_return: float = attrs.field(default=0.0, validator=_shock_return)
    shock_after_days: float = attrs.field(default=0.0, validator=_shock_after_days)

    def __attrs_post_init__(self) -> None:
        if self.shock_after_days > 0 and self.shock_return == 0:
            raise ValueError("scenario.shock_after_days is set but scenario.shock_return is 0: no shock would happen")


def _positive_in(section: str) -> Any:
    """A validator: a finite number > 0, named ``section.field`` when not."""
    def check(inst: Any, attr: attrs.Attribute, value: float) -> None:
        _finite(inst, attr, value, f"{section}.")
        if value <= 0:
            raise ValueError(f"{section}.{attr.name} must be > 0, got {value}")
    return check


_positive = _positive_in("live")


@attrs.frozen
class LiveSettings:
    """How live orders are run (``fundarb trade``, and the runner).

    A market order still open after ``order_timeout_seconds`` is cancelled.
    When the two legs of a pair end unequal (a refusal, a partial fill, a
    timeout), the lagging leg is completed or the leading one unwound within
    ``hedge_timeout_seconds``; past that the pair is reported as a naked leg
    and new entries are blocked. Pre-flight refuses a trade whose spread or
    expected slippage (walking the venue's book) exceeds the bp limits.
    Reconciliation runs every ``reconcile_interval_seconds`` in long-running
    processes. A venue request without an answer after
    ``request_timeout_seconds`` is given up (and, where safe, retried).
    Without the section the defaults apply and the config hash is the one it
    had before the section existed.
    """

    order_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    hedge_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)
    reconcile_interval_seconds: float = attrs.field(default=300.0, validator=_positive)
    max_spread_bp: float = attrs.field(default=10.0, validator=_positive)
    max_slippage_bp: float = attrs.field(default=15.0, validator=_positive)
    request_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)


_alerts_positive = _positive_in("alerts")


@attrs.frozen
class AlertSettings:
    """How alerts are rate-limited (``fundarb.alerts``). Where they go is not
    here: apprise URLs carry secrets, so they come from ``FUNDARB_ALERT_URLS``.
    Without the section the defaults apply and the config hash is unchanged."""

    dedup_minutes: float = attrs.field(default=30.0, validator=_alerts_positive)
    max_per_hour: int = attrs.field(default=20, validator=_alerts_positive)
    drawdown_warning: float = attrs.field(default=0.8, validator=_alerts_positive)
    unreachable_seconds: float = attrs.field(default=60.0, validator=_alerts_positive)

    def __attrs_post_init__(self) -> None:
        if self.drawdown_warning > 1:
            raise ValueError(f"alerts.drawdown_warning is a share of risk.max_drawdown, at most 1, got {self.drawdown_warning}")


_runner_positive = _positive_in("runner")


_runner_nonneg = _nonneg_in("runner")


@attrs.frozen
class RunnerSettings:
    """How the strategy runner (``fundarb run``) behaves around the core.

    No entry or exit is started within ``settlement_quiet_minutes`` of a
    funding settlement (before or after it): prices and the funding estimate
    jump around the instant. Risk actions (margin, drift, the kill switch)
    are not held back. The window applies wherever the engine runs, so a
    backtest of the same config makes the decisions the runner would. A
    venue that has not answered for ``alerts.unreachable_seconds`` within
    ``unreachable_alert_minutes`` of a settlement raises a critical alert.
    The runner logs a heartbeat every ``heartbeat_seconds`` and checks the
    trade log for a kill switch every ``kill_poll_seconds``. Without the
    section the defaults apply and the config hash is unchanged.
    """

    settlement_quiet_minutes: float = attrs.field(default=0.0, validator=_runner_nonneg)
    unreachable_alert_minutes: float = attrs.field(default=30.0, validator=_runner_positive)
    heartbeat_seconds: float = attrs.field(default=30.0, validator=_runner_positive)
    kill_poll_seconds: float = attrs.field(default=1.0, validator=_runner_positive)
    # a feed event this far behind the runner's clock is refused and alerted (a venue clock that went back)
    max_clock_backstep_seconds: float = attrs.field(default=5.0, validator=_runner_positive)
    # a feed with no event for this long is stale: resubscribed, polled over REST, alerted
    max_feed_silence_seconds: float = attrs.field(default=60.0, validator=_runner_positive)
    # the tighter limit within settlement_window_minutes of a settlement (the alert is critical there)
    settlement_feed_silence_seconds: float = attrs.field(default=15.0, validator=_runner_positive)
    settlement_window_minutes: float = attrs.field(default=10.0, validator=_runner_nonneg)


_market_positive = _positive_in("market_data")


def _confirm_count(inst: Any, attr: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"market_data.{attr.name} must be a whole number >= 2 (one observation confirms "
                         f"nothing), got {value!r}")


@attrs.frozen
class MarketDataSettings:
    """When a market price is believed (``fundarb.core.market_guard``).

    A price more than ``max_jump`` from the last accepted price of its own
    series (a ratio: above ``last * (1 + max_jump)`` or below
    ``last / (1 + max_jump)``), or more than ``max_gap`` from another series
    (the other leg, the mark) accepted within ``reference_seconds``, is held:
    not applied to the book, so it never moves the drawdown the kill switch
    measures, and alerted once. It is accepted when it persists for
    ``confirm_count`` observations or ``confirm_seconds``, or when another
    source moves the same way. The guard runs wherever the engine runs
    (backtest, replay, runner). Without the section the defaults apply and
    the config hash is unchanged.
    """

    max_jump: float = attrs.field(default=1.0, validator=_market_positive)
    max_gap: float = attrs.field(default=0.10, validator=_market_positive)
    reference_seconds: float = attrs.field(default=60.0, validator=_market_positive)
    confirm_count: int = attrs.field(default=3, validator=_confirm_count)
    confirm_seconds: float = attrs.field(default=60.0, validator=_market_positive)

    def limits(self) -> GuardLimits:
        return GuardLimits(self.max_jump, self.max_gap, self.reference_seconds, self.confirm_count,
                           self.confirm_seconds)


@attrs.frozen
class Config:
    name: str = attrs.field(validator=_run_name)
    spot: VenueConfig
    perp: VenueConfig
    seed: int = 0
    capital: float = 100_000.0
    perp_allocation: float = 0.35
    collateral_rate: float = 0.03
    data: DataConfig = DataConfig()
    strategy: CarryParams = CarryParams()
    risk: RiskLimits = RiskLimits()
    transfer: TransferConfig = TransferConfig()
    scenario: Scenario | None = None
    live: LiveSettings | None = None
    alerts: AlertSettings | None = None
    runner: RunnerSettings | None = None
    market_data: MarketDataSettings | None = None

    def __attrs_post_init__(self) -> None:
        if not (self.capital > 0 and math.isfinite(self.capital)):
            raise ValueError("capital must be a positive number")
        if not 0 < self.perp_allocation < 1:
            raise ValueError("perp_allocation must be between 0 and 1")

    @property
    def live_settings(self) -> LiveSettings:
        return self.live or LiveSettings()

    @property
    def alert_settings(self) -> AlertSettings:
        return self.alerts or AlertSettings()

    @property
    def runner_settings(self) -> RunnerSettings:
        return self.runner or RunnerSettings()

    @property
    def market_data_settings(self) -> MarketDataSettings:
        return self.market_data or MarketDataSettings()

    @property
    def spot_account(self) -> str:
        return f"{self.spot.exchange}:spot"

    @property
    def perp_account(self) -> str:
        return f"{self.perp.exchange}:perp"

    @property
    def spot_cash(self) -> float:
        return self.capital * (1 - self.perp_allocation)

    @property
    def perp_cash(self) -> float:
        return self.capital * self.perp_allocation


_converter = cattrs.Converter(forbid_extra_keys=True)


def to_dict(cfg: Config) -> dict[str, Any]:
    raw = _converter.unstructure(cfg)
    for optional in ("scenario", "live", "alerts", "runner", "market_data"):
        if raw.get(optional) is None:
            # no key rather than null: TOML has no null, and a config without
            # the section keeps the identity (hash) it had before it existed
            raw.pop(optional, None)
    for section, field, default in _OMITTED_DEFAULTS:
        if section in raw and raw[section].get(field) == default:
            raw[section].pop(field)
    return raw


# fields added after configs were hashed: at their default they are not part
# of the config's identity (TOML dumps and hashes stay as they were)
_OMITTED_DEFAULTS = (("data", "settlement_tolerance_seconds", 1.0),
                     ("runner", "max_clock_backstep_seconds", 5.0),
                     ("runner", "max_feed_silence_seconds", 60.0),
                     ("runner", "settlement_feed_silence_seconds", 15.0),
                     ("runner", "settlement_window_minutes", 10.0))


def canonical_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()


_SECTIONS = ("data", "spot", "perp", "strategy", "risk", "transfer", "scenario", "live", "alerts", "runner",
             "market_data")


def from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    for key in _SECTIONS:  # cattrs would only say "'str' object has no attribute 'keys'"
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{source}: {key} must be a [{key}] section (a table), got {raw[key]!r}")
    for leg in ("spot", "perp"):
        if "maintenance_margin_rate" in raw.get(leg, {}):
            raise ConfigError(f"{source}: {leg}.maintenance_margin_rate is no longer a setting: the maintenance "
                              "margin rate now comes from the venue's margin tiers (docs/margin.md); remove the line")
    count = raw.get("market_data", {}).get("confirm_count", 3)
    if isinstance(count, bool) or not isinstance(count, int):  # cattrs would cut 2.5 to 2 and read "3" as 3
        raise ConfigError(f"{source}: market_data.confirm_count must be a whole number >= 2, got {count!r}")
    try:
        return _converter.structure(raw, Config)
    except Exception as exc:  # cattrs groups nested errors: flatten to one line
        raise ConfigError(f"{source}: {describe_error(exc)}") from None


def describe_error(exc: BaseException) -> str:
    if not isinstance(exc, cattrs.BaseValidationError):
        return str(exc)

    def fmt(e: BaseException, typ: Any) -> str:
        if isinstance(e, KeyError):
            return f"required field missing {e}"
        if type(e) is ValueError:  # our validators' messages say what is wrong
            return str(e)
        return format_exception(e, typ)

    msgs = cattrs.transform_error(exc, format_exception=fmt)
    return "; ".join(m.replace("@ $.", "at ").replace("@ $", "") for m in msgs)


def load(path: str | Path) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file") from None
    return from_dict(raw, str(p))


def dumps(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))
