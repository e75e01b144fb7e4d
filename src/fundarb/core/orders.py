"""Order state machine: a transition table; anything not in it raises."""

from __future__ import annotations

from enum import Enum

import attrs

from fundarb.core.model import Fill, OrderIntent, Side

QTY_EPS = 1e-12


class OrderStatus(str, Enum):
    NEW = "new"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_PENDING = "cancel_pending"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = OrderStatus
TERMINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED})

# A venue may skip the ack (fill straight from SUBMITTED) and a fill may race a
# cancel (fills from CANCEL_PENDING), so those edges are legal; nothing leaves
# a terminal state.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.NEW: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset(
        {S.ACCEPTED, S.REJECTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.EXPIRED}
    ),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.EXPIRED, S.CANCELED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.EXPIRED}),
    S.CANCEL_PENDING: frozenset({S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def client_order_id(config_hash: str, intent_seq: int) -> str:
    """Deterministic client id from (config hash, intent sequence): a retry of
    the same intent carries the same id, so a venue can never double it."""
    return f"fa{config_hash[:12]}-{intent_seq}"


@attrs.define(slots=True)
class Order:
    client_id: str
    venue: str
    side: Side
    qty: float
    ts_created: int
    reason: str
    pair_id: int = 0
    reduce_only: bool = False
    limit_price: float | None = None
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    notional: float = 0.0
    fees: float = 0.0
    ts_updated: int = 0
    status_reason: str = ""

    @classmethod
    def from_intent(cls, intent: OrderIntent, client_id: str, ts: int) -> Order:
        return cls(
            client_id=client_id,
            venue=intent.venue,
            side=intent.side,
            qty=intent.qty,
            ts_created=ts,
            reason=intent.reason,
            pair_id=intent.pair_id,
            reduce_only=intent.reduce_only,
            limit_price=intent.limit_price,
            ts_updated=ts,
        )

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled_qty, 0.0)

    @property
    def avg_price(self) -> float:
        return self.notional / self.filled_qty if self.filled_qty > 0 else 0.0

    @property
    def is_open(self) -> bool:
        return not self.status.terminal

    def transition(self, new: OrderStatus, ts: int, reason: str = "") -> None:
        if new not in TRANSITIONS[self.status]:
            raise IllegalTransition(
                f"order {self.client_id}: {self.status.value} -> {new.value} is not allowed"
            )
        self.status = new
        self.ts_updated = ts
        if reason:
            self.status_reason = reason

    def apply_fill(self, fill: Fill) -> None:
        if fill.client_id != self.client_id:
            raise ValueError(f"fill for {fill.client_id} applied to order {self.client_id}")
        if fill.side is not self.side:
            raise ValueError(f"order {self.client_id}: fill side {fill.side.value} != order side")
        if fill.qty <= 0 or self.filled_qty + fill.qty > self.qty * (1 + 1e-9) + QTY_EPS:
            raise IllegalTransition(
                f"order {self.client_id}: fill of {fill.qty} overfills {self.filled_qty}/{self.qty}"
            )
        filled = self.filled_qty + fill.qty
        done = self.qty - filled <= QTY_EPS + 1e-9 * self.qty
        # transition first: a refused fill must leave the order untouched
        self.transition(OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED, fill.ts)
        self.filled_qty = filled
        self.notional += fill.qty * fill.price
        self.fees += fill.fee
