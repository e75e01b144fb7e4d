"""Venue rotation: when a perp/perp carry moves to another pair of venues.

A pair is a long perp on one venue and a short perp on another; its signal
is the short's funding less the long's, annualised (``FundingSignal``'s
rule, each venue over as many of its settlements as cover the short's
window). The carry moves from the pair it holds to the best other one when

    best - current > switch_cost * 365 / expected_holding_days + hysteresis_apr

and it has held the current pair for ``min_hold_days``: a move pays both
round trips (closing this pair and, in time, the new one in and out: each
leg's fee, half spread and impact, ``wiring.round_trip_cost``), a withdrawal
fee for each venue the capital leaves, and the carry it forgoes while the
withdrawals are on their way (the new pair's signal over the delay). The
hysteresis and the minimum hold keep two pairs that trade places in the noise
from flapping. A pair whose signals are not all known yet is no candidate.

Pure: the signals and costs come from the caller (a backtest's history, a
runner's venues), the decision is the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from fundarb.core.model import NS_PER_HOUR, require


@attrs.frozen(order=True)
class Pair:
    """A perp/perp carry's venues: the long perp's and the short perp's."""

    long: str
    short: str

    def __str__(self) -> str:
        return f"long {self.long} / short {self.short}"

    def venues(self) -> frozenset[str]:
        return frozenset((self.long, self.short))


@attrs.frozen
class SwitchCost:
    """What moving the carry costs, as fractions of notional and hours."""

    round_trips: float  # both pairs' round trips
    withdrawals: float  # the withdrawal fees of the venues the capital leaves
    delay_hours: float  # the time the capital is on its way (no carry)


@attrs.frozen
class Move:
    """A decision to move from ``current`` (None: not placed yet) to ``to``."""

    current: Pair | None
    to: Pair
    gain_apr: float  # the new pair's signal less the current one's
    bar_apr: float  # what it had to beat: amortised cost, forgone carry and hysteresis


@attrs.frozen
class RotationRule:
    expected_holding_days: float
    hysteresis_apr: float
    min_hold_days: float

    def __attrs_post_init__(self) -> None:
        require("rotation", {"expected_holding_days": self.expected_holding_days > 0,
                             "hysteresis_apr": self.hysteresis_apr >= 0, "min_hold_days": self.min_hold_days >= 0})

    def bar_apr(self, cost: SwitchCost, new_signal_apr: float) -> float:
        """The gain a move must beat: its costs amortised over the expected
        hold, the new pair's carry forgone over the delay (as a share of that
        hold), and the hysteresis."""
        hold_h = self.expected_holding_days * 24
        amortised = (cost.round_trips + cost.withdrawals) * 365 / self.expected_holding_days
        forgone = max(new_signal_apr, 0.0) * min(cost.delay_hours, hold_h) / hold_h
        return amortised + forgone + self.hysteresis_apr

    def choose(self, current: Pair | None, held_since_ns: int, now_ns: int, signals: Mapping[Pair, float],
               cost: Mapping[Pair, SwitchCost]) -> Move | None:
        """The move to make now, or None to stay. ``signals``: each pair's
        signal APR (pairs not yet known left out); ``cost[p]``: moving from
        ``current`` to ``p``. With no pair held yet, the best known pair is
        taken (its own entry is the strategy's to judge)."""
        if not signals:
            return None
        best = max(sorted(signals), key=lambda p: signals[p])
        if current is None:
            return Move(None, best, signals[best], 0.0)
        if best == current or current not in signals:
            return None
        if now_ns - held_since_ns < self.min_hold_days * 24 * NS_PER_HOUR:
            return None
        gain = signals[best] - signals[current]
        bar = self.bar_apr(cost[best], signals[best])
        return Move(current, best, gain, bar) if gain > bar else None
