"""Frozen value types that flow between venues, the engine and the core.

Time is always an integer of nanoseconds since the epoch (UTC), named ``ts``.
Quantities are BTC; prices and cash are in the quote currency (USDT).
Market events are small slots classes because one is built per tick.
"""

from __future__ import annotations

from enum import Enum

import attrs

NS_PER_SECOND = 1_000_000_000
NS_PER_HOUR = 3600 * NS_PER_SECOND
HOURS_PER_YEAR = 8760.0


def require(section: str, checks: dict[str, bool]) -> None:
    """Raise one ValueError naming every failed check of a parameter section."""
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"{section}: invalid {', '.join(bad)}")


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"

    def __init__(self, value: str) -> None:
        # +1 buy, -1 sell: a plain attribute of each member, read on every order and fill
        self.sign = 1 if value == "buy" else -1

    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class MarketKind(str, Enum):
    SPOT = "spot"
    PERP = "perp"


class Liquidity(str, Enum):
    MAKER = "maker"
    TAKER = "taker"


@attrs.frozen(slots=True)
class Instrument:
    """One tradeable market on one venue (ccxt id and unified symbol)."""

    venue: str
    symbol: str
    kind: MarketKind


# --- market events (one per tick: keep them small) -------------------------


@attrs.frozen(slots=True)
class Quote:
    """Top of book. ``bid == ask`` means only a mid price is known (bar data)."""

    ts: int
    venue: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@attrs.frozen(slots=True)
class MarkPrice:
    """A perp venue's mark price, the price its margin and funding use."""

    ts: int
    venue: str
    mark: float


@attrs.frozen(slots=True)
class IndexPrice:
    """A perp venue's index price (its spot composite, the reference its
    mark is built on). Only the market guard uses it: a mark far from the
    index is not believed. Histories and recordings carry none."""

    ts: int
    venue: str
    index: float


@attrs.frozen(slots=True)
class Trade:
    """A print on a venue's tape (recorded feeds carry them; bars do not)."""

    ts: int
    venue: str
    side: Side  # the taker's side
    qty: float
    price: float


@attrs.frozen(slots=True)
class FundingRate:
    """What the venue currently says about funding (before settlement).

    ``rate`` is the latest known rate per interval; ``predicted_rate`` is the
    venue's estimate for the next settlement where it publishes one.
    """

    ts: int
    venue: str
    rate: float
    interval_hours: float
    next_funding_ts: int
    predicted_rate: float | None = None


@attrs.frozen(slots=True)
class FundingSettlement:
    """A funding payment instant: the rate and the mark price it settles at.

    ``mark_source`` says where the mark came from ("venue" or
    "perp_close" when the history has no mark and the perp price stands in).
    """

    ts: int
    venue: str
    rate: float
    interval_hours: float
    mark: float
    mark_source: str = "venue"


@attrs.frozen(slots=True)
class Timer:
    """A clock tick at which the engine marks equity to market."""

    ts: int


# --- trading events ---------------------------------------------------------


@attrs.frozen(slots=True)
class OrderIntent:
    """What the strategy or risk wants done on one leg; not yet an order."""

    venue: str
    side: Side
    qty: float
    reason: str
    pair_id: int = 0
    reduce_only: bool = False
    limit_price: float | None = None


@attrs.frozen(slots=True)
class Fill:
    """An execution. ``mid`` is the venue's reference price at the fill, so
    slippage = side.sign * qty * (price - mid)."""

    ts: int
    venue: str
    client_id: str
    side: Side
    qty: float
    price: float
    mid: float
    fee: float
    liquidity: Liquidity = Liquidity.TAKER
    liquidation: bool = False


@attrs.frozen(slots=True)
class OrderUpdate:
    """A venue's word on an order's status that is not a fill."""

    ts: int
    venue: str
    client_id: str
    status: str  # an OrderStatus value
    reason: str = ""


@attrs.frozen(slots=True)
class TransferRequest:
    ts: int
    from_venue: str
    to_venue: str
    amount: float
    transfer_id: str = ""


@attrs.frozen(slots=True)
class TransferDone:
    """Cash moved between venues: ``amount`` left at request time, ``amount -
    fee`` arrives at ``ts``."""

    ts: int
    transfer_id: str
    from_venue: str
    to_venue: str
    amount: float
    fee: float


@attrs.frozen(slots=True)
class TransferRejected:
    """The venue refused a transfer: the amount never left."""

    ts: int
    from_venue: str
    to_venue: str
    amount: float
    reason: str


@attrs.frozen(slots=True)
class Alert:
    ts: int
    kind: str
    message: str
    severity: str = "warning"


@attrs.frozen(slots=True)
class Charge:
    """A venue cost that is neither a trade fee nor funding (margin borrow interest)."""

    ts: int
    venue: str
    amount: float
    kind: str
