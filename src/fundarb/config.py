"""Run configuration: attrs classes, TOML load/dump via cattrs, config hash.

A config's identity is the sha256 of its canonical JSON (sorted keys, no
whitespace); reports, trade logs and promotion records carry it.

Fields are strictly typed and ranged. A float field takes a TOML float or
integer, a whole-number field only an integer, a flag only ``true`` or
``false``, a text field only a string: nothing else is converted (cattrs'
own hooks would read ``true`` as 1.0, ``7`` as True, ``1.5`` as 1 and
``"3"`` as 3). Every number has a :class:`FieldRule` with a finite range of
what a venue really charges or a user could mean (docs/config.md lists
them). The same rule checks a value when a file is read (cattrs structure
hooks, which know the field's path) and when a section is built in code
(attrs validators); the sections of ``fundarb.core`` (``[strategy]``,
``[risk]``) get their rules at structure time only, since the core keeps
its own invariants. Every refusal is one :class:`ConfigError` line naming
the file and the field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import cattrs
import tomli_w
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception

from fundarb.core.errors import FundarbError
from fundarb.core.liquidation import collateral_value, is_inverse_symbol
from fundarb.core.market_guard import GuardLimits
from fundarb.core.risk import HARD_MAX_LEVERAGE, RiskLimits
from fundarb.core.strategy import CarryParams, always_on


class ConfigError(FundarbError, ValueError):
    """A config that cannot be used; the message (one line) names the file and the field."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class FieldError(ConfigError):
    """One field refused: its name in its section (empty when the path that
    cattrs reports already ends with it) and what is wrong. Where the file
    is read, the section's path is put in front: ``spot.taker_fee must ...``."""

    def __init__(self, field: str, text: str) -> None:
        ValueError.__init__(self, field, text)  # both in args: it pickles
        self.field, self.text = field, _one_line(text)

    def __str__(self) -> str:
        return f"{self.field} {self.text}" if self.field else self.text


def _one_line(text: str) -> str:
    return " ".join(str(text).splitlines())


def _show(value: Any) -> str:
    """A value as a message shows it: short, one line, and never walking a
    structure nested deeper than a few levels (repr of a list nested
    thousands deep is a RecursionError)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        if abs(value) < 10**30:
            return repr(value)
        return f"a{' negative' if value < 0 else 'n'} integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return f"{value.isoformat()} (a TOML date or time)"
    if isinstance(value, (list, dict)):
        if _shallow(value):
            text = repr(value)
            if len(text) <= 80:
                return text
        if isinstance(value, list):
            return f"an array of {len(value)} item{'s' if len(value) != 1 else ''}"
        return f"a table of {len(value)} key{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"


def _shallow(value: Any, depth: int = 3, most: int = 20) -> bool:
    stack, seen = [(value, 0)], 0
    while stack:
        item, level = stack.pop()
        seen += 1
        if seen > most:
            return False
        if isinstance(item, (list, dict)):
            if level >= depth:
                return False
            stack.extend((x, level + 1) for x in (item.values() if isinstance(item, dict) else item))
    return True


def _num(x: float) -> str:
    """A bound as the messages and docs/config.md write it: 0.02, 3600000, 1e12."""
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, int):
        digits = str(abs(x))
        if len(digits) > 7 and digits.rstrip("0") == digits[0]:
            return f"{'-' if x < 0 else ''}{digits[0]}e{len(digits) - 1}"
        return str(x)
    return repr(x)


@attrs.frozen
class FieldRule:
    """What a number or flag field takes: its TOML type (a float field also
    takes an integer; nothing else is converted) and, for numbers, a range
    ``lo <= x <= hi`` (``<`` where open). ``hint`` says the unit, shown
    when a value is out of range (a percent typed where a fraction is meant).

    The rule is an attrs validator (sections built in code) and gives the
    cattrs structure hook of its field (files): one check, both ways.
    """

    kind: type  # float, int or bool
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    hint: str = ""
    hi_text: str = ""  # how hi is written, when not as a number ("2**63")

    def complaint(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be ..., got ..."), or None."""
        got = f", got {_show(value)}"
        hint = f" ({self.hint})" if self.hint else ""
        if self.kind is bool:
            return None if isinstance(value, bool) else f"must be true or false{got}"
        if self.kind is int:
            whole = "must be a whole number" + (f" >{'' if self.lo_open else '='} {_num(self.lo)}" if self.lo is not None else "")
            if isinstance(value, bool) or not isinstance(value, int) or (self.lo is not None and self._below(value)):
                return f"{whole}{got}"
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number (a TOML float or integer){got}"
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                return f"must be a finite number{got}"
            if self.lo is not None and self._below(value):
                return f"must be >{'' if self.lo_open else '='} {_num(self.lo)}{hint}{got}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be <{'' if self.hi_open else '='} {self.hi_text or _num(self.hi)}{hint}{got}"
        return None

    def _below(self, value: float) -> bool:
        assert self.lo is not None
        return value <= self.lo if self.lo_open else value < self.lo

    def text(self) -> str:
        """The range as docs/config.md writes it: ``0 <= x <= 0.02``, ``whole, x >= 1``."""
        if self.kind is bool:
            return "true or false"
        lo = f"{_num(self.lo)} <{'' if self.lo_open else '='} " if self.lo is not None else ""
        hi = f" <{'' if self.hi_open else '='} {self.hi_text or _num(self.hi)}" if self.hi is not None else ""
        core = f"{lo}x{hi}" if lo or hi else "any"
        return f"whole, {core}" if self.kind is int else core

    def structure(self, value: Any, _: Any = None) -> Any:
        """The cattrs hook: the value checked, an integer for a float field made a float."""
        why = self.complaint(value)
        if why:
            raise FieldError("", why)
        return float(value) if self.kind is float else value

    def __call__(self, inst: Any, attr: attrs.Attribute, value: Any) -> None:
        why = self.complaint(value)
        if why:
            raise FieldError(attr.name, why)


def _between(lo: float | None, hi: float | None, **kw: Any) -> FieldRule:
    return FieldRule(float, lo, hi, **kw)


def _above(lo: float, hi: float, **kw: Any) -> FieldRule:
    """lo < x <= hi."""
    return FieldRule(float, lo, hi, lo_open=True, **kw)


def _whole(lo: int, hi: int, **kw: Any) -> FieldRule:
    return FieldRule(int, lo, hi, **kw)


_FLAG = FieldRule(bool)
_APR = "a fraction of a year: 0.06 means 6% APR"
# below 0 a maker rebate (BitMEX and Bybit paid makers 0.00025); 2% is above
# what any BTC order book charges a taker
_FEE = _between(-0.001, 0.02, hint="a fraction of notional: 0.001 means 0.1%")
_SECONDS_HOUR = _above(0, 3600)
_SECONDS_DAY = _above(0, 86400)


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
    (``fundarb.data.margin_tiers``, docs/margin.md).
    """

    exchange: str
    symbol: str
    taker_fee: float = attrs.field(default=0.001, validator=_FEE)
    maker_fee: float = attrs.field(default=0.001, validator=_FEE)
    # a BTC book's half spread is a fraction of a bp on the big venues; 1% is no market to trade
    half_spread_bp_min: float = attrs.field(default=0.1, validator=_between(0, 100))
    half_spread_bp_max: float = attrs.field(default=0.5, validator=_between(0, 100))
    impact_bp_per_btc: float = attrs.field(default=0.5, validator=_between(0, 100))
    depth_btc: float = attrs.field(default=5.0, validator=_above(0, 10_000))
    # an hour: a backtest may model a venue that answers that late (tests do)
    latency_ms_median: float = attrs.field(default=50.0, validator=_between(0, 3_600_000))
    latency_sigma: float = attrs.field(default=0.5, validator=_between(0, 3))
    order_ttl_seconds: float = attrs.field(default=600.0, validator=_between(0, 604_800))
    liquidation_fee_rate: float = attrs.field(default=0.0125, validator=_between(
        0, 0.1, hint="a fraction of the position's notional: 0.0125 means 1.25%"))
    # Binance offers 125x on BTC, a few venues 200x and more
    max_venue_leverage: float = attrs.field(default=20.0, validator=_between(1, 500))
    borrow_rate_annual: float = attrs.field(default=0.05, validator=_between(
        0, 2, hint="a fraction of a year: 0.05 means 5% APR"))

    def __attrs_post_init__(self) -> None:
        if self.half_spread_bp_max < self.half_spread_bp_min:
            raise FieldError("half_spread_bp_max", f"must be >= half_spread_bp_min ({self.half_spread_bp_min}), "
                                                   f"got {self.half_spread_bp_max}")


def _date_text(value: Any, _: Any = None) -> str:
    """data.start / data.end: a string, or a TOML date or date-time (read as its
    text, as it always was: the same config hash as the quoted form)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return str(value)
    raise FieldError("", f"must be a date, quoted (\"2021-07-01\") or not, got {_show(value)}")


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
    max_price_gap_hours: float = attrs.field(default=6.0, validator=_between(0, 720))
    settlement_tolerance_seconds: float = attrs.field(default=1.0, validator=_between(
        0, 1800, hi_open=True, hint="seconds: 1800 is half an hour"))


@attrs.frozen
class TransferConfig:
    delay_minutes: float = attrs.field(default=60.0, validator=_between(0, 10_080))
    fee: float = attrs.field(default=1.0, validator=_between(0, 1000, hint="USDT per transfer"))


def _run_name(inst: Any, attr: attrs.Attribute, value: str) -> None:
    # the name becomes a folder under runs/: keep it a plain file name
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise FieldError("name", f"must be letters, digits, '_', '.', '-' (at most 64), got {_show(value)}")


def _description(inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise FieldError(attr.name, "must not be empty (say what is real and what is changed)")


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
    funding_scale: float = attrs.field(default=1.0, validator=_between(-10, 10))
    funding_shift_apr: float = attrs.field(default=0.0, validator=_between(
        -1, 1, hint="a fraction of a year: -0.15 means -15% APR"))
    shock_return: float = attrs.field(default=0.0, validator=_above(
        -1, 10, hint="a return: 0.30 means +30%, and a fall of 100% leaves no price"))
    shock_after_days: float = attrs.field(default=0.0, validator=_between(0, 3650))

    def __attrs_post_init__(self) -> None:
        if self.shock_after_days > 0 and self.shock_return == 0:
            raise FieldError("shock_after_days", "is set but scenario.shock_return is 0: no shock would happen")


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

    order_timeout_seconds: float = attrs.field(default=10.0, validator=_SECONDS_HOUR)
    hedge_timeout_seconds: float = attrs.field(default=30.0, validator=_SECONDS_HOUR)
    reconcile_interval_seconds: float = attrs.field(default=300.0, validator=_SECONDS_DAY)
    max_spread_bp: float = attrs.field(default=10.0, validator=_above(0, 1000))
    max_slippage_bp: float = attrs.field(default=15.0, validator=_above(0, 1000))
    request_timeout_seconds: float = attrs.field(default=10.0, validator=_above(0, 300))


@attrs.frozen
class AlertSettings:
    """How alerts are rate-limited (``fundarb.live.alerts``). Where they go is not
    here: apprise URLs carry secrets, so they come from ``FUNDARB_ALERT_URLS``.
    Without the section the defaults apply and the config hash is unchanged."""

    dedup_minutes: float = attrs.field(default=30.0, validator=_above(0, 10_080))
    max_per_hour: int = attrs.field(default=20, validator=_whole(1, 3600))
    drawdown_warning: float = attrs.field(default=0.8, validator=_above(0, 1, hint="a share of risk.max_drawdown"))
    unreachable_seconds: float = attrs.field(default=60.0, validator=_SECONDS_DAY)


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

    # any window is valid (one of half the funding interval or more holds back every entry);
    # the bound only catches a number typed wildly wrong
    settlement_quiet_minutes: float = attrs.field(default=0.0, validator=_between(0, 1_000_000))
    unreachable_alert_minutes: float = attrs.field(default=30.0, validator=_above(0, 1440))
    heartbeat_seconds: float = attrs.field(default=30.0, validator=_SECONDS_HOUR)
    # a kill switch read less often than once a minute is no kill switch
    kill_poll_seconds: float = attrs.field(default=1.0, validator=_above(0, 60))
    # a feed event this far behind the runner's clock is refused and alerted (a venue clock that went back)
    max_clock_backstep_seconds: float = attrs.field(default=5.0, validator=_SECONDS_HOUR)
    # a feed with no event for this long is stale: resubscribed, polled over REST, alerted
    max_feed_silence_seconds: float = attrs.field(default=60.0, validator=_SECONDS_HOUR)
    # the tighter limit within settlement_window_minutes of a settlement (the alert is critical there)
    settlement_feed_silence_seconds: float = attrs.field(default=15.0, validator=_SECONDS_HOUR)
    settlement_window_minutes: float = attrs.field(default=10.0, validator=_between(0, 240))


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

    max_jump: float = attrs.field(default=1.0, validator=_above(0, 100))
    max_gap: float = attrs.field(default=0.10, validator=_above(0, 10))
    reference_seconds: float = attrs.field(default=60.0, validator=_SECONDS_DAY)
    # one observation confirms nothing
    confirm_count: int = attrs.field(default=3, validator=_whole(2, 1000))
    confirm_seconds: float = attrs.field(default=60.0, validator=_SECONDS_DAY)

    def limits(self) -> GuardLimits:
        return GuardLimits(self.max_jump, self.max_gap, self.reference_seconds, self.confirm_count,
                           self.confirm_seconds)


SPOT_LINEAR, COIN_MARGINED, UNIFIED, PERP_PERP = "spot_linear", "coin_margined", "unified", "perp_perp"
STRUCTURES = (SPOT_LINEAR, COIN_MARGINED, UNIFIED, PERP_PERP)
CAPITAL_ASSETS = ("USDT", "BTC")
# Bybit's tiered collateral value ratio of BTC in a unified trading account, as
# the response example of its API documentation (GET /v5/spot-margin-trade/collateral
# ?currency=BTC) shows it: 0..1,000,000 BTC at 0.85, nothing above. An example,
# not a fetched table: a config names the venue's current tiers.
BYBIT_BTC_COLLATERAL_EXAMPLE: tuple[tuple[float, float], ...] = ((1_000_000.0, 0.85),)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise FieldError(attr.name, f"must be one of {', '.join(choices)}, got {_show(value)}")
    return check


def _tiers(value: Any, _: Any = None) -> tuple[tuple[float, float], ...]:
    """structure.collateral_tiers: an array of [up to BTC, collateral value ratio]
    pairs, caps ascending (the core's collateral rule checks them)."""
    shape = "must be an array of [up to BTC, ratio] pairs like [[1000000, 0.85]]"
    if not isinstance(value, (list, tuple)) or not value:
        raise FieldError("", f"{shape}, got {_show(value)}")
    out = []
    for pair in value:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in pair)):
            raise FieldError("", f"{shape}, got {_show(value)}")
        cap, ratio = float(pair[0]), float(pair[1])
        if not (math.isfinite(cap) and math.isfinite(ratio)):
            raise FieldError("", f"{shape} of finite numbers (BTC beyond the last cap counts nothing), got {_show(value)}")
        out.append((cap, ratio))
    try:
        collateral_value(1.0, out)
    except ValueError as exc:
        raise FieldError("", str(exc)) from None
    return tuple(out)


def _check_tiers(inst: Any, attr: attrs.Attribute, value: Any) -> None:
    _tiers(value)


@attrs.frozen
class StructureConfig:
    """How the carry holds its two legs (docs/structures.md).

    - ``spot_linear``: spot BTC paid in full on one account, a linear (USDT)
      perp short margined by its own account, topped up by transfers.
    - ``coin_margined``: the BTC bought is the margin of an inverse perp short
      (``perp.symbol`` settled in BTC, such as ``BTC/USD:BTC``) of whole
      contracts of ``contract_size`` USD; funding, fees and PnL in BTC.
    - ``unified``: one account on one exchange whose spot BTC counts as the
      linear short's collateral at the ``collateral_tiers`` ratios.

    Without the section the structure is ``spot_linear`` and the config hash
    is the one it had before the section existed. In the two one-account
    structures the whole capital buys the spot leg (``perp_allocation`` is
    not used): there is no second account to fund.
    """

    kind: str = attrs.field(default=SPOT_LINEAR, validator=_one_of(STRUCTURES))
    # Binance COIN-M BTCUSD_PERP is 100 USD a contract; Bybit BTCUSD and BitMEX XBTUSD 1 USD
    contract_size: float = attrs.field(default=100.0, validator=_above(0, 1_000_000, hint="USD per contract"))
    capital_asset: str = attrs.field(default="USDT", validator=_one_of(CAPITAL_ASSETS))
    collateral_tiers: tuple[tuple[float, float], ...] = attrs.field(
        default=BYBIT_BTC_COLLATERAL_EXAMPLE, validator=_check_tiers)

    def __attrs_post_init__(self) -> None:
        if self.capital_asset == "BTC" and self.kind != COIN_MARGINED:
            raise FieldError("capital_asset", f"\"BTC\" (a carry on BTC already held) needs kind = \"coin_margined\": "
                                              f"the BTC held is the inverse short's margin (kind is {self.kind})")

    @property
    def keeps_btc(self) -> bool:
        """The capital is BTC the owner holds: the carry hedges it and gives it back."""
        return self.capital_asset == "BTC"


@attrs.frozen
class RotationConfig:
    """Venue rotation of a perp/perp carry (``fundarb.core.rotation``): the
    carry may move to any pair of two venues among [spot], [perp] and
    ``venues`` (further linear perps, each a [spot]/[perp]-style table; none:
    the two venues in either direction), long one and short the other, when the best pair's signal beats the held one's
    by the switching cost amortised over ``strategy.expected_holding_days``
    plus ``hysteresis_apr``, after at least ``min_hold_days`` on it. Without
    the section the carry stays on its pair and the config hash is unchanged.
    """

    venues: tuple[VenueConfig, ...] = ()
    hysteresis_apr: float = attrs.field(default=0.02, validator=_between(0, 1, hint=_APR))
    min_hold_days: float = attrs.field(default=7.0, validator=_between(0, 3650))


# [strategy] and [risk] are classes of fundarb.core, which checks its own
# invariants (notional > 0, exit_apr <= entry_apr, max_leverage <= 3, ...);
# what a config file may say is ruled here, at structure time
_CORE_RULES: dict[type, dict[str, FieldRule]] = {
    CarryParams: {
        "notional": _above(0, 1e12),
        # BTC funding has been above 100% APR only at the peaks of 2021: a bar above it would all but never trade
        "entry_apr": _between(-1, 1, hint=_APR),
        "exit_apr": _between(-1, 1, hint=_APR),
        "signal_settlements": _whole(1, 1000),
        "expected_holding_days": _above(0, 3650),
        "max_holding_days": _above(0, 3650),
        "target_profit": _above(0, 1, hint="a fraction of notional: 0.10 means 10%"),
        "cooldown_hours": _between(0, 8760),
        "allow_reverse": _FLAG,
        "lot_size": _above(0, 1, hint="BTC"),
    },
    RiskLimits: {
        "max_position_btc": _above(0, 10_000),
        "max_notional": _above(0, 1e12),
        "max_leverage": _above(0, HARD_MAX_LEVERAGE),
        # (liquidation - mark) / mark of the short: 1 / leverage, roughly; 10 is a tenth of 1x
        "min_margin_buffer": _between(0.30, 10),
        "topup_target_buffer": _above(0.30, 10),
        "hard_margin_buffer": _above(0, 10),
        "max_drawdown": FieldRule(float, 0, 1, lo_open=True, hi_open=True, hint="a fraction of peak equity"),
        "max_drift": FieldRule(float, 0, 1, lo_open=True, hi_open=True, hint="a fraction of the position"),
        "auto_rebalance": _FLAG,
        "flatten_on_kill": _FLAG,
    },
}


@attrs.frozen
class Config:
    name: str = attrs.field(validator=_run_name)
    spot: VenueConfig
    perp: VenueConfig
    # numpy's SeedSequence takes no negative seed; a 64-bit one is plenty
    seed: int = attrs.field(default=0, validator=_whole(0, 2**63, hi_open=True, hi_text="2**63"))
    capital: float = attrs.field(default=100_000.0, validator=_above(0, 1e12, hint="USDT"))
    perp_allocation: float = attrs.field(default=0.35, validator=FieldRule(
        float, 0, 1, lo_open=True, hi_open=True, hint="a share of capital: 0.35 means 35%"))
    collateral_rate: float = attrs.field(default=0.03, validator=_between(
        -0.1, 1, hint="a fraction of a year: 0.03 means 3%"))
    data: DataConfig = DataConfig()
    strategy: CarryParams = CarryParams()
    risk: RiskLimits = RiskLimits()
    transfer: TransferConfig = TransferConfig()
    scenario: Scenario | None = None
    live: LiveSettings | None = None
    alerts: AlertSettings | None = None
    runner: RunnerSettings | None = None
    market_data: MarketDataSettings | None = None
    structure: StructureConfig | None = None
    rotation: RotationConfig | None = None

    def __attrs_post_init__(self) -> None:
        kind = self.structure_kind
        if self.rotation is not None:
            self._check_rotation(self.rotation)
        inverse = is_inverse_symbol(self.perp.symbol)
        if kind == COIN_MARGINED and not inverse:
            raise FieldError("perp.symbol", f"must be an inverse perpetual settled in BTC (such as \"BTC/USD:BTC\" on "
                                            f"binancecoinm) for structure.kind coin_margined, got {_show(self.perp.symbol)}")
        if kind != COIN_MARGINED and inverse:
            raise FieldError("perp.symbol", f"{_show(self.perp.symbol)} is an inverse perpetual: it needs "
                                            f"structure.kind = \"coin_margined\" (structure is {kind})")
        if self.keeps_btc and self.strategy.allow_reverse:
            raise FieldError("strategy.allow_reverse", "must be false when structure.capital_asset is \"BTC\": a "
                                                       "reverse carry would sell the BTC held short")
        if kind == PERP_PERP:
            if ":" not in self.spot.symbol or is_inverse_symbol(self.spot.symbol):
                raise FieldError("spot.symbol", f"must be a linear perpetual (such as \"BTC/USDT:USDT\"): in a "
                                                f"perp_perp carry [spot] is the long perp's venue, got {_show(self.spot.symbol)}")
            if self.spot.exchange.removesuffix("usdm") == self.perp.exchange.removesuffix("usdm"):
                raise FieldError("spot.exchange", f"must differ from perp.exchange for structure.kind perp_perp (a "
                                                  f"cross-venue carry), both are {_show(self.perp.exchange)}")
        if kind == UNIFIED and self.spot.exchange != self.perp.exchange.removesuffix("usdm"):
            raise FieldError("perp.exchange", f"must be the spot leg's exchange ({_show(self.spot.exchange)}) for "
                                              f"structure.kind unified (one account), got {_show(self.perp.exchange)}")

    def _check_rotation(self, rotation: RotationConfig) -> None:
        if self.structure_kind != PERP_PERP:
            raise FieldError("rotation", f"venue rotation moves a perp/perp carry: it needs structure.kind = "
                                         f"\"perp_perp\" (structure is {self.structure_kind})")
        if self.strategy.allow_reverse:
            raise FieldError("strategy.allow_reverse", "must be false with [rotation]: the rotation chooses which "
                                                       "venue of a pair is short")
        seen: set[str] = set()
        for i, v in enumerate((self.spot, self.perp, *rotation.venues)):
            if ":" not in v.symbol or is_inverse_symbol(v.symbol):
                raise FieldError(f"rotation.venues[{i - 2}].symbol" if i >= 2 else "spot.symbol",
                                 f"must be a linear perpetual (such as \"BTC/USDT:USDT\"), got {_show(v.symbol)}")
            venue = v.exchange.removesuffix("usdm")
            if venue in seen:
                raise FieldError(f"rotation.venues[{i - 2}].exchange", f"{_show(v.exchange)} is named twice among "
                                                                        "[spot], [perp] and rotation.venues")
            seen.add(venue)

    def always_on(self) -> Config:
        """The always-on benchmark of this config: the same structure, capital,
        costs, margin rules and seed, the carry held from the first hour to
        the last (``fundarb.core.strategy.always_on``) on the first pair (no
        rotation)."""
        return attrs.evolve(self, strategy=always_on(self.strategy), rotation=None)

    def rotation_venues(self) -> tuple[VenueConfig, ...]:
        """The linear perps a rotating carry may hold: [spot], [perp], then ``rotation.venues``."""
        return (self.spot, self.perp, *(self.rotation.venues if self.rotation else ()))

    @property
    def structure_kind(self) -> str:
        return self.structure.kind if self.structure else SPOT_LINEAR

    @property
    def structure_settings(self) -> StructureConfig:
        return self.structure or StructureConfig()

    @property
    def keeps_btc(self) -> bool:
        """Whether the capital is BTC already held (``structure.capital_asset = "BTC"``)."""
        return self.structure is not None and self.structure.keeps_btc

    def held_btc(self, spot_price: float) -> float:
        """BTC the spot leg holds at the start: the capital's worth at
        ``spot_price`` when the capital is BTC (to the satoshi), else 0."""
        return math.floor(self.capital / spot_price * 1e8) / 1e8 if self.keeps_btc else 0.0

    @property
    def one_account(self) -> bool:
        """Whether the spot BTC margins the perp (no second account, no transfers)."""
        return self.structure_kind in (COIN_MARGINED, UNIFIED)

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
    def long_perp(self) -> bool:
        """Whether the long leg ([spot]) is a linear perp on its own venue (a
        perp/perp carry), not a spot market: the one rule of what the config's
        long leg is (the live session checks the venue's market is that)."""
        return self.structure_kind == PERP_PERP

    @property
    def spot_account(self) -> str:
        """The long leg's account: the spot one, or a perp/perp carry's long perp."""
        return f"{self.spot.exchange}:{'long' if self.long_perp else 'spot'}"

    @property
    def perp_account(self) -> str:
        return f"{self.perp.exchange}:perp"

    @property
    def spot_cash(self) -> float:
        if self.keeps_btc:
            return 0.0  # the capital is the BTC held (``held_btc``)
        return self.capital if self.one_account else self.capital * (1 - self.perp_allocation)

    @property
    def perp_cash(self) -> float:
        return 0.0 if self.one_account else self.capital * self.perp_allocation


_converter = cattrs.Converter(forbid_extra_keys=True)


def _text(value: Any, _: Any = None) -> str:
    if not isinstance(value, str):
        raise FieldError("", f"must be a string (in quotes), got {_show(value)}")
    return value


def _rules_of(cls: type) -> dict[str, FieldRule]:
    if cls in _CORE_RULES:
        return _CORE_RULES[cls]
    return {f.name: f.validator for f in attrs.fields(cls) if isinstance(f.validator, FieldRule)}


def _register_hooks() -> None:
    """Each section's fields structured by their rules (a field without one
    by the strict hook of its type). Sections before Config: its hook is
    built from theirs."""
    for kind in (float, int, bool):
        _converter.register_structure_hook(kind, FieldRule(kind).structure)
    _converter.register_structure_hook(str, _text)
    sections = (VenueConfig, DataConfig, TransferConfig, Scenario, LiveSettings, AlertSettings, RunnerSettings,
                MarketDataSettings, StructureConfig, RotationConfig, CarryParams, RiskLimits, Config)
    for cls in sections:
        hooks: dict[str, Callable[[Any, Any], Any]] = {name: rule.structure for name, rule in _rules_of(cls).items()}
        if cls is DataConfig:
            hooks.update(start=_date_text, end=_date_text)
        if cls is StructureConfig:
            hooks.update(collateral_tiers=_tiers)
        overrides = {name: override(struct_hook=hook) for name, hook in hooks.items()}
        # cattrs takes the per-attribute overrides as keyword arguments beside its own flags
        fn = make_dict_structure_fn(cls, _converter, _cattrs_forbid_extra_keys=True, **overrides)  # type: ignore[arg-type]
        _converter.register_structure_hook(cls, fn)


_register_hooks()


def field_rules() -> dict[str, FieldRule]:
    """Every ruled field of a config by its path (``seed``, ``spot.taker_fee``,
    ``market_data.confirm_count``), optional sections included."""
    out: dict[str, FieldRule] = {}
    for f in attrs.fields(attrs.resolve_types(Config)):
        section = next((t for t in (f.type, *getattr(f.type, "__args__", ())) if attrs.has(t)), None)
        if section is None:
            if isinstance(f.validator, FieldRule):
                out[f.name] = f.validator
        else:
            out.update({f"{f.name}.{name}": rule for name, rule in _rules_of(section).items()})
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    raw = _converter.unstructure(cfg)
    for optional in ("scenario", "live", "alerts", "runner", "market_data", "structure", "rotation"):
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
             "market_data", "structure", "rotation")


def from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a table of keys, got {_show(raw)}")
    for key in _SECTIONS:  # cattrs would only say "'str' object has no attribute 'keys'"
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{source}: {key} must be a [{key}] section (a table), got {_show(raw[key])}")
    for leg in ("spot", "perp"):
        if "maintenance_margin_rate" in raw.get(leg, {}):
            raise ConfigError(f"{source}: {leg}.maintenance_margin_rate is no longer a setting: the maintenance "
                              "margin rate now comes from the venue's margin tiers (docs/margin.md); remove the line")
    try:
        return _converter.structure(raw, Config)
    except Exception as exc:  # cattrs groups nested errors: flatten to one line
        raise ConfigError(f"{source}: {describe_error(exc)}") from None


def describe_error(exc: BaseException) -> str:
    """A structuring error as one line: each failure after the path of its
    field (``spot.taker_fee must be ...``), several joined with "; "."""
    return "; ".join(_messages(exc, "", None))


def _messages(exc: BaseException, path: str, typ: Any) -> list[str]:
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        out: list[str] = []
        for inner, note in with_notes:
            if isinstance(note, IterableValidationNote):
                where = f"{path}[{note.index!r}]"
            else:
                where = f"{path}.{note.name}" if path else note.name
            out += _messages(inner, where, note.type)
        for inner in without:
            out += _messages(inner, path, None)
        return out
    return [_message(exc, path, typ)]


def _message(exc: BaseException, path: str, typ: Any) -> str:
    if isinstance(exc, FieldError):
        name = ".".join(p for p in (path, exc.field) if p)
        return f"{name} {exc.text}" if name else exc.text
    if isinstance(exc, KeyError):
        return f"{path or 'a key'} is missing (required)"
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = sorted(exc.extra_fields)
        names = ", ".join(k if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", k) else json.dumps(k[:40]) for k in keys)
        return f"unknown key{'s' if len(keys) > 1 else ''} {names} " + (f"in [{path}]" if path else "at the top level")
    if isinstance(exc, RecursionError):
        return f"{path or 'a value'} is nested too deeply to read"
    if isinstance(exc, ValueError) and type(exc) in (ValueError, ConfigError):  # messages that say what is wrong
        text = _one_line(str(exc))
        return text if not path or text.startswith(path) else f"{path}: {text}"
    text = _one_line(format_exception(exc, typ))
    return f"{path}: {text}" if path else text


DEFAULT_CONFIG = Path("sims/baseline.toml")
# the two-account spot/perp carry: the base the structure comparison starts from
SPOT_PERP_CONFIG = Path("sims/spot_perp.toml")


def project_file(relative: Path) -> Path:
    """A file or folder of the project (``sims/...``, ``recordings/...``): in
    the working folder, else beside the package source (a checkout), else the
    copy the wheel ships inside the package; the working-folder path when
    there is none, so the error names what was looked for."""
    package = Path(__file__).resolve().parent
    for p in (relative, package.parent.parent / relative, package / relative):
        if p.exists():
            return p
    return relative


def default_config_path() -> Path:
    return project_file(DEFAULT_CONFIG)


def spot_perp_config_path() -> Path:
    """The two-account spot/perp carry: the base of compare, scan and funding stats."""
    return project_file(SPOT_PERP_CONFIG)


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        folder = p.is_dir()
        special = not folder and p.exists() and not p.is_file()  # a pipe or a device: reading might never end
        data = b"" if folder or special else p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, ValueError) as exc:  # permissions, a vanished mount, a NUL in the name
        raise ConfigError(f"{p}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if folder or special:
        raise ConfigError(f"{p}: a folder, not a config file" if folder else f"{p}: not a regular file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          "a TOML file is UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        where = _too_deep(text)
        raise ConfigError(f"{p}: {where + ': ' if where else ''}arrays or tables nested too deeply to read") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise ConfigError(f"{p}: not valid TOML: {str(exc).split(';')[0]}") from None
    return from_dict(raw, str(p))


def _too_deep(text: str, most: int = 100) -> str:
    """Where a TOML text first nests arrays or inline tables more than
    ``most`` deep, as ``line 31 (perp.taker_fee)``: tomllib's RecursionError
    says nothing of where. A plain scan: strings and comments skipped,
    multi-line strings not told apart (it names a line, it proves nothing)."""
    section, key, depth = "", "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if depth == 0:
            header = re.fullmatch(r"\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?", line)
            if header:
                section = header.group(1)
                continue
            assignment = re.match(r"\s*([^=\[\]{}]+?)\s*=", line)
            key = assignment.group(1) if assignment else ""
        quote = ""
        for ch in line:
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
                if depth > most:
                    name = ".".join(x for x in (section, key) if x)
                    return f"line {number}" + (f" ({name})" if name else "")
            elif ch in "]}":
                depth -= 1
    return ""


def dumps(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))
