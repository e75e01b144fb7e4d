"""The one place an engine is put together, for a backtest, a replay, paper
and live alike: the strategy with its round-trip cost estimate, the risk
monitor with what it knows of the venues' costs, and the market guard, around
whatever venue, book, clock and recorder the caller brings."""

from __future__ import annotations

import math

from fundarb.config import COIN_MARGINED, PERP_PERP, SPOT_LINEAR, UNIFIED, Config, VenueConfig
from fundarb.config import config_hash as hash_of
from fundarb.core.book import COIN, OWN_COLLATERAL, Collateral, PositionBook
from fundarb.core.book import UNIFIED as UNIFIED_COLLATERAL
from fundarb.core.clock import SimClock
from fundarb.core.engine import Engine, Recorder
from fundarb.core.errors import FundarbError
from fundarb.core.liquidation import CROSS, ISOLATED, MarginRule
from fundarb.core.market_guard import MarketGuard
from fundarb.core.model import NS_PER_SECOND
from fundarb.core.risk import RiskMonitor, VenueCosts
from fundarb.core.strategy import CarryStrategy
from fundarb.core.venue import Venue
from fundarb.data.margin_tiers import shipped_rule


class StructureNotSupported(FundarbError, ValueError):
    """A config's structure that this path does not run yet."""


def require_structure(cfg: Config, what: str, kinds: tuple[str, ...] = (SPOT_LINEAR,)) -> None:
    """Refuse ``what`` (a command or backend) for a structure it does not run
    (``kinds``: those it does): a backtest models every structure; the venue
    commands trade spot_linear, coin_margined, unified and perp_perp."""
    if cfg.structure_kind not in kinds:
        raise StructureNotSupported(
            f"config {cfg.name} is structure.kind {cfg.structure_kind}, which {what} does not run yet (it runs "
            f"{' and '.join(kinds)}); `fundarb backtest` models it")


def collateral_of(cfg: Config) -> Collateral:
    """What margins the perp leg under the config's structure."""
    kind = cfg.structure_kind
    if kind == COIN_MARGINED:
        return Collateral(COIN, keep_btc=cfg.keeps_btc)
    if kind == UNIFIED:
        return Collateral(UNIFIED_COLLATERAL, cfg.structure_settings.collateral_tiers)
    return OWN_COLLATERAL


def contract_size_of(cfg: Config) -> float:
    """The perp's USD per contract when it is inverse, else 0 (a linear perp trades BTC)."""
    return cfg.structure_settings.contract_size if cfg.structure_kind == COIN_MARGINED else 0.0


def venue_leverage(cfg: Config) -> int:
    """The perp venue's leverage setting the live commands keep: a linear
    short's isolated collateral is sized by it, so at most the config's
    leverage limit; a coin-margined short's cross wallet margins it whatever
    the setting, which sizes only the initial margin: the venue leverage the
    config models (``perp.max_venue_leverage``)."""
    if cfg.structure_kind == COIN_MARGINED:
        return max(1, math.floor(cfg.perp.max_venue_leverage))
    return max(1, math.floor(cfg.risk.max_leverage))


def venue_margin_mode(cfg: Config) -> str:
    """The perp's margin mode at the venue: isolated for a linear short (its
    own collateral, topped up by transfers), cross for a coin-margined one
    (the wallet's BTC, the carry's, margins it)."""
    return CROSS if cfg.structure_kind == COIN_MARGINED else ISOLATED


def round_trip_cost(cfg: Config, price: float) -> float:
    """Expected cost of opening and closing both legs, as a fraction of notional:
    fees, mean half spread and impact at the configured size, and two transfers
    (none where the spot BTC margins the perp: one account, nothing to move)."""
    qty = cfg.strategy.notional / price
    per_side = leg_cost(cfg.spot, qty) + leg_cost(cfg.perp, qty)
    transfers = 0.0 if cfg.one_account else 2 * cfg.transfer.fee / cfg.strategy.notional
    return 2 * per_side + transfers


def leg_cost(v: VenueConfig, qty: float) -> float:
    """One taker trade of ``qty`` BTC on a market of ``v``, as a fraction of
    its notional: the fee, the mean half spread and the impact at that size."""
    half_spread = 0.5 * (v.half_spread_bp_min + v.half_spread_bp_max)
    return v.taker_fee + (half_spread + v.impact_bp_per_btc * qty) / 1e4


def venue_costs(cfg: Config, margin: MarginRule | None = None) -> VenueCosts:
    """What the risk checks know of the venues: the configured fees and, for
    the perp, ``margin`` (the venue's liquidation rule; default the shipped
    snapshot's for the configured exchange and symbol)."""
    slip = max(cfg.spot.half_spread_bp_max, cfg.perp.half_spread_bp_max) / 1e4 + 0.001
    if margin is None:
        margin = shipped_rule(cfg.perp.exchange, cfg.perp.symbol)
    allocation = 0.0 if cfg.one_account else cfg.perp_allocation
    # perp/perp: the long perp's venue rule (the shipped snapshot's)
    long_margin = shipped_rule(cfg.spot.exchange, cfg.spot.symbol) if cfg.structure_kind == PERP_PERP else None
    return VenueCosts(cfg.spot.taker_fee, cfg.perp.taker_fee, slip, margin, cfg.transfer.fee, allocation,
                      long_margin=long_margin)


def wire_engine(cfg: Config, venue: Venue, book: PositionBook, clock: SimClock, recorder: Recorder, *,
                costs: VenueCosts, spot_price: float, config_hash: str | None = None) -> Engine:
    """The engine over ``venue`` and ``book``: the config's strategy, its
    round-trip cost sized at ``spot_price``, the risk monitor with ``costs``,
    and the market guard's limits."""
    strategy = CarryStrategy(cfg.strategy, round_trip_cost(cfg, spot_price), book.spot_venue, book.perp_venue,
                             quiet_ns=int(cfg.runner_settings.settlement_quiet_minutes * 60 * NS_PER_SECOND),
                             differential=cfg.structure_kind == PERP_PERP)
    return Engine(venue, book, strategy, RiskMonitor(cfg.risk, costs), config_hash or hash_of(cfg), clock, recorder,
                  MarketGuard(cfg.market_data_settings.limits()))

