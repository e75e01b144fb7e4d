"""Threshold carry strategy: market state -> order intents.

Enter when the funding signal, annualised, beats ``entry_apr`` after the
round-trip cost is amortised over the expected holding period:

    signal_apr - round_trip_cost * 365 / expected_holding_days > entry_apr

The signal is the mean of the last ``signal_settlements`` rates known: the
settled ones, and, once the venue has announced the rate of the coming
settlement (its predicted rate; a history's settled rate, announced shortly
before it, ``core.funding.ANNOUNCED_BEFORE_NS``), that rate as the newest. So
an entry is decided before a settlement, on what it will pay, and accrues it;
entry and exit read the same signal. Exit below
``exit_apr``, after ``max_holding_days``, or once the position's carry
(funding received minus fees and slippage since entry) reaches
``target_profit`` (fraction of notional). Carry, not mark-to-market PnL: a
hedged book's MTM moves with the basis and, mid-update, with whichever leg's
price arrived first. Normal carry is long spot / short
perp; the reverse (short spot on margin, long perp) only if ``allow_reverse``.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

from fundarb.core.book import PositionBook
from fundarb.core.funding import annualize
from fundarb.core.model import NS_PER_HOUR, OrderIntent, Side, require


@attrs.frozen
class CarryParams:
    notional: float = 60_000.0
    entry_apr: float = 0.10
    exit_apr: float = 0.0
    signal_settlements: int = 3
    expected_holding_days: float = 14.0
    max_holding_days: float = 120.0
    target_profit: float = 0.10
    cooldown_hours: float = 24.0
    allow_reverse: bool = False
    lot_size: float = 0.001

    def __attrs_post_init__(self) -> None:
        checks = {
            "notional": self.notional > 0,
            "signal_settlements": self.signal_settlements >= 0,
            "expected_holding_days": self.expected_holding_days > 0,
            "max_holding_days": self.max_holding_days > 0,
            "target_profit": self.target_profit > 0,
            "cooldown_hours": self.cooldown_hours >= 0,
            "lot_size": self.lot_size > 0,
            "exit_apr": self.exit_apr <= self.entry_apr,
        }
        require("strategy", checks)


@attrs.define(slots=True)
class FundingSignal:
    """Settled rates so far and the venue's latest prediction."""

    window: int
    interval_hours: float = 8.0
    rates: deque[float] = attrs.field(factory=deque)
    predicted: float | None = None
    last_settlement_ts: int = 0
    next_settlement_ts: int = 0  # the venue's announced next instant (0: not known)
    _current_apr: float = 0.0  # cached: decide() runs on every tick
    # the window's mean with the announced rate as its newest (None: none announced since the last settlement)
    _known_apr: float | None = None
    version: int = 0  # counts the changes: what is worked out from the signal is kept until it changes

    def on_settlement(self, ts: int, rate: float, interval_hours: float) -> None:
        self.rates.append(rate)
        while len(self.rates) > self.window:  # (a perp/perp carry's long leg may narrow its window)
            self.rates.popleft()
        self.interval_hours = interval_hours
        self.last_settlement_ts = ts
        self.predicted = None  # a prediction is for the settlement just made
        self._known_apr = None
        total = 0.0
        for r in self.rates:  # in order, one by one, as the path kernel adds them (3.12's sum() compensates)
            total += r
        # a window of none (``always_on``) keeps no rates and reads 0, as the path kernel's signal does
        self._current_apr = mean_apr(total, len(self.rates), interval_hours) if self.rates else 0.0
        self.version += 1

    def on_rate(self, predicted: float | None, interval_hours: float, next_settlement_ts: int = 0) -> None:
        self.predicted = predicted
        self.interval_hours = interval_hours
        if next_settlement_ts:
            self.next_settlement_ts = next_settlement_ts
        self._known_apr = None
        if predicted is not None and self.window:
            earlier = list(self.rates)[max(len(self.rates) - (self.window - 1), 0):]
            total = 0.0
            for r in earlier:  # in order, then the announced rate, as the path kernel adds them
                total += r
            total += predicted
            self._known_apr = mean_apr(total, len(earlier) + 1, interval_hours)
        self.version += 1

    def near_settlement(self, now: int, window_ns: int) -> bool:
        """Within ``window_ns`` of the last settlement or of the next one (the
        announced instant, else the last plus the interval)."""
        last = self.last_settlement_ts
        if last and 0 <= now - last < window_ns:
            return True
        nxt = self.next_settlement_ts if self.next_settlement_ts >= now else (
            last + int(self.interval_hours * NS_PER_HOUR) if last else 0)
        return bool(nxt) and 0 <= nxt - now < window_ns

    @property
    def ready(self) -> bool:
        return len(self.rates) + (self._known_apr is not None) >= self.window

    def current_apr(self) -> float:
        """Annualised mean of the settled rates in the window."""
        return self._current_apr

    def known_apr(self) -> float:
        """What the carry decides on: the mean of the window's rates known now,
        the venue's announced rate for the coming settlement the newest where
        it has one (the settled rates alone where not)."""
        return self._current_apr if self._known_apr is None else self._known_apr

    def predicted_apr(self) -> float | None:
        if self.predicted is None:
            return None
        return annualize(self.predicted, self.interval_hours)


def always_on(p: CarryParams) -> CarryParams:
    """The benchmark every report sets beside a carry: the same structure,
    entered at the first prices and held to the last hour. It needs no
    signal (a window of no settlements, ready at once), clears every entry
    bar and has no exit of its own: only the risk rules close it, and after a
    cut it enters again once the cooldown is over. Run by the same rules as
    any carry (and by the path kernel, which reads the same parameters)."""
    return attrs.evolve(p, signal_settlements=0, entry_apr=-UNREACHABLE, exit_apr=-UNREACHABLE,
                        max_holding_days=UNREACHABLE, target_profit=UNREACHABLE)


# what no funding rate (as an APR), holding time (days) or carry (a fraction of notional) reaches: the
# always-on benchmark's bars, finite so that a config holding them has a canonical form and a hash
UNREACHABLE = 1e9


def mean_apr(rate_sum: float, count: int, interval_hours: float) -> float:
    """The signal: the mean of ``count`` settled rates (their sum ``rate_sum``), annualised."""
    return annualize(rate_sum / count, interval_hours)


def settlements_covering(n: int, reference_hours: float, interval_hours: float) -> int:
    """How many settlements of a venue settling every ``interval_hours`` cover
    ``n`` settlements of ``reference_hours`` (an hourly venue against an
    8-hour one: 8n), at least one: one window, whatever the venues' intervals."""
    return max(1, round(n * reference_hours / interval_hours))


def amortised_cost_apr(round_trip_cost: float, expected_holding_days: float) -> float:
    """The round trip (fraction of notional) spread over the expected holding period, as an APR."""
    return round_trip_cost * 365.0 / expected_holding_days


def clears_entry(edge: float, cost_apr: float, entry_apr: float) -> bool:
    """The entry rule of a normal carry: the signal net of the amortised round trip beats ``entry_apr``."""
    return edge - cost_apr > entry_apr


def entry_qty(notional: float, spot_mid: float, lot: float) -> float:
    """The BTC an entry buys: ``notional`` at the spot mid, down to whole lots."""
    return math.floor(notional / spot_mid / lot) * lot


def cooldown_end(now: int, cooldown_hours: float) -> int:
    """When a carry that closed (or an entry refused) at ``now`` may enter again."""
    return now + int(cooldown_hours * NS_PER_HOUR)


# an instant no event reaches: ``CarryStrategy.still_until`` when only an event other than a price can change a decision
NEVER = 1 << 62

# why a carry exits (``exit_code``): none, the signal fell below exit_apr, held too long, the target reached
EXIT_NONE, EXIT_SIGNAL, EXIT_MAX_HOLD, EXIT_TARGET = 0, 1, 2, 3
EXIT_REASONS = ("", "exit_signal", "exit_max_hold", "exit_target")


def max_hold_reached(held_ns: int, max_holding_days: float) -> bool:
    """A carry held ``held_ns`` has reached its ``max_holding_days``."""
    return held_ns >= max_holding_days * 24 * NS_PER_HOUR


def exit_code(direction: int, signal_apr: float, exit_apr: float, held_ns: int, max_holding_days: float,
              carry_gain: float, target_profit: float, notional: float) -> int:
    """The exit rule: the signal (signed by the carry's direction) below
    ``exit_apr``, a holding of ``max_holding_days``, or a carry gained since
    entry of ``target_profit`` of the notional, checked in that order."""
    if direction * signal_apr < exit_apr:
        return EXIT_SIGNAL
    if max_hold_reached(held_ns, max_holding_days):
        return EXIT_MAX_HOLD
    if carry_gain >= target_profit * notional:
        return EXIT_TARGET
    return EXIT_NONE


@attrs.define(slots=True)
class CarryStrategy:
    params: CarryParams
    round_trip_cost: float  # fraction of notional for open + close, both legs
    spot_venue: str
    perp_venue: str
    signal: FundingSignal = attrs.field(init=False)
    entry_ts: int = 0
    entry_carry: float = 0.0
    direction: int = 0  # +1 normal carry, -1 reverse, 0 flat
    cooldown_until: int = 0
    pair_seq: int = 0
    entries: int = 0  # entries sent (vetoed ones are taken back by `abandon`)
    quiet_ns: int = 0  # no entry or exit this close to a settlement (risk actions are not held back)
    # perp/perp: the long leg is a perp on ``spot_venue`` whose funding the carry pays (positive rates);
    # its signal is deducted from the short's (``long_signal``)
    differential: bool = False
    long_signal: FundingSignal | None = attrs.field(init=False, default=None)
    # told to leave this pair (the carry moves elsewhere, ``core.rotation``): exit, never enter again
    leaving: bool = False
    # decide() runs on every event, and its verdicts change only with the signal, the book's carry, a new
    # pair or time: the entry direction the signal clears (kept per signal version), and the inputs of the
    # last exit check that found no reason to exit (then only the holding time can give one)
    _entry_key: int = attrs.field(init=False, default=-1, eq=False, repr=False)
    _entry_dir: int = attrs.field(init=False, default=0, eq=False, repr=False)
    _stay_key: int = attrs.field(init=False, default=-1, eq=False, repr=False)
    _stay_carry: float = attrs.field(init=False, default=math.nan, eq=False, repr=False)
    _stay_pair: int = attrs.field(init=False, default=-1, eq=False, repr=False)
    _hold_end: tuple[int, int] = attrs.field(init=False, default=(-1, 0), eq=False, repr=False)  # (entry_ts, end)
    # what the last decision promised: before this instant, asked again with only the prices and the
    # time moved on (a quote), ``decide`` answers nothing, so an engine need not ask (0: no promise)
    still_until: int = attrs.field(init=False, default=0, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.signal = FundingSignal(self.params.signal_settlements)
        if self.differential:
            self.long_signal = FundingSignal(self.params.signal_settlements)

    def on_settlement(self, venue: str, ts: int, rate: float, interval_hours: float) -> None:
        """A settlement on ``venue``: the short's feeds the signal; a perp/perp
        carry's long leg feeds its own, over as many of its settlements as
        cover the short's window (an hourly venue against an 8-hour one: 8x)."""
        self.still_until = 0
        long = self.long_signal
        if long is not None and venue == self.spot_venue:
            short_interval = self.signal.interval_hours
            long.window = settlements_covering(self.params.signal_settlements, short_interval, interval_hours)
            long.on_settlement(ts, rate, interval_hours)
            return
        self.signal.on_settlement(ts, rate, interval_hours)

    def on_rate(self, venue: str, predicted: float | None, interval_hours: float, next_settlement_ts: int = 0) -> None:
        self.still_until = 0
        long = self.long_signal
        (long if long is not None and venue == self.spot_venue else self.signal).on_rate(
            predicted, interval_hours, next_settlement_ts)

    def long_apr(self) -> float:
        """What the long leg pays, annualised (0 unless perp/perp): its
        signal, or the predicted next rate where that is higher."""
        long = self.long_signal
        if long is None:
            return 0.0
        pred = long.predicted_apr()
        return long.current_apr() if pred is None else max(long.current_apr(), pred)

    @property
    def ready(self) -> bool:
        return self.signal.ready and (self.long_signal is None or self.long_signal.ready)

    @property
    def amortised_cost_apr(self) -> float:
        return amortised_cost_apr(self.round_trip_cost, self.params.expected_holding_days)

    def _signal_key(self) -> int:
        """Changes whenever a signal the entry and exit rules read changes."""
        long = self.long_signal
        return self.signal.version if long is None else self.signal.version + (long.version << 32)

    def entry_edge(self) -> float:
        """The signal APR an entry is judged on (``FundingSignal.known_apr``:
        the announced rate counted as it will settle), less what a perp/perp
        carry's long leg pays."""
        return self.signal.known_apr() - self.long_apr()

    def decide(self, book: PositionBook, spot_mid: float, now: int) -> list[OrderIntent]:
        """Called on every event; cheap when nothing changes. Sets
        ``still_until``: where nothing but a price or the time can change the
        answer, the instant before which it stays nothing. That is the end
        of a cooldown, or the holding time's exit. It is never (``NEVER``)
        when only a settlement, a prediction, a fill or funding can change
        it: an engine asks again after each of those."""
        self.still_until = 0
        if self.quiet_ns and self.signal.near_settlement(now, self.quiet_ns):
            return []
        if book.is_flat:
            if self.direction != 0:  # closed elsewhere (risk, liquidation unwind)
                self._closed(now)
            if self.leaving:
                self.still_until = NEVER
                return []
            return self._maybe_enter(book, spot_mid, now)
        if self.direction == 0:
            self.still_until = NEVER
            return []  # a position the strategy did not open: risk owns it
        return self._maybe_exit(book, now)

    # --- entry ---------------------------------------------------------
    def _maybe_enter(self, book: PositionBook, spot_mid: float, now: int) -> list[OrderIntent]:
        if now < self.cooldown_until:
            self.still_until = self.cooldown_until
            return []
        if not spot_mid > 0 or not book.perp.price > 0:
            return []  # no market seen yet (the perp's: the short leg could not be placed)
        direction = self.entry_direction()
        if not direction:
            self.still_until = NEVER
            return []  # the signal is not ready, or does not clear the bar
        lot = self.params.lot_size
        qty = entry_qty(self.params.notional, spot_mid, lot)
        if book.collateral.keep_btc:
            if direction < 0:
                return []  # a reverse carry would sell the holder's BTC short
            perp_qty = hedge_units(book, qty)
            qty = btc_to_buy(book, qty, lot)
        else:
            perp_qty = hedge_units(book, qty * direction)
            if qty <= 0:
                return []
        if perp_qty <= 0:
            return []
        self.pair_seq += 1
        self.entries += 1
        self.direction = direction
        self.entry_ts = now
        self.entry_carry = carry(book)
        spot_side = Side.BUY if direction > 0 else Side.SELL
        legs = [OrderIntent(self.spot_venue, spot_side, qty, "entry", self.pair_seq)] if qty > 0 else []
        return [*legs, OrderIntent(self.perp_venue, spot_side.opposite(), perp_qty, "entry", self.pair_seq)]

    def entry_direction(self) -> int:
        """The carry the signal clears the entry bar for: 1 normal, -1 reverse
        (only if ``allow_reverse``), 0 none (or the signal is not ready)."""
        key = self._signal_key()
        if key != self._entry_key:
            if not self.ready:
                self._entry_key, self._entry_dir = key, 0
                return 0
            edge = self.entry_edge()
            cost = self.amortised_cost_apr
            if clears_entry(edge, cost, self.params.entry_apr):
                self._entry_dir = 1
            elif self.params.allow_reverse and -edge - cost > self.params.entry_apr:
                self._entry_dir = -1
            else:
                self._entry_dir = 0
            self._entry_key = key
        return self._entry_dir

    # --- exit ----------------------------------------------------------
    def leave(self) -> None:
        """The carry moves to another pair: close this one at the next decision, and enter no more."""
        self.leaving = True
        self.still_until = 0

    def exit_reason(self, book: PositionBook, now: int) -> str | None:
        p = self.params
        if self.leaving:
            return "exit_rotation"
        signal = self.signal.known_apr() - self.long_apr()
        code = exit_code(self.direction, signal, p.exit_apr, now - self.entry_ts, p.max_holding_days,
                         carry(book) - self.entry_carry, p.target_profit, p.notional)
        return EXIT_REASONS[code] or None

    def _maybe_exit(self, book: PositionBook, now: int) -> list[OrderIntent]:
        gained = carry(book)
        key = self._signal_key()
        if (gained == self._stay_carry and key == self._stay_key and self.pair_seq == self._stay_pair
                and not self.leaving and not max_hold_reached(now - self.entry_ts, self.params.max_holding_days)):
            self.still_until = self.hold_end()
            return []  # the same signal, carry and pair as the last check that found no reason: still none
        reason = self.exit_reason(book, now)
        if reason is None:
            self._stay_carry, self._stay_key, self._stay_pair = gained, key, self.pair_seq
            self.still_until = self.hold_end()
            return []
        self.pair_seq += 1
        intents = close_intents(book, reason, self.pair_seq)
        self._closed(now)
        return intents

    def hold_end(self) -> int:
        """The first instant at which the holding-time rule (``max_hold_reached``)
        exits the carry entered at ``entry_ts``. The rule is monotone in the time
        held, so the instant is found by doubling, then bisection, on the rule
        itself; it is worked out once per entry."""
        entry_ts, end = self._hold_end
        if entry_ts != self.entry_ts:
            days = self.params.max_holding_days
            lo, hi = 0, 1  # the rule holds at hi and not at lo (days > 0: not at 0)
            while not max_hold_reached(hi, days):
                if hi > NEVER:  # no holding time a run reaches
                    self._hold_end = (self.entry_ts, NEVER)
                    return NEVER
                lo, hi = hi, 2 * hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if max_hold_reached(mid, days):
                    hi = mid
                else:
                    lo = mid
            end = self.entry_ts + hi
            self._hold_end = (self.entry_ts, end)
        return end

    def abandon(self, now: int) -> None:
        """An entry that risk refused: back to flat, and wait out the cooldown."""
        self.entries -= 1
        self._closed(now)

    def _closed(self, now: int) -> None:
        self.direction = 0
        self.cooldown_until = cooldown_end(now, self.params.cooldown_hours)


def hedge_units(book: PositionBook, spot_qty: float) -> float:
    """The perp order that hedges ``spot_qty`` BTC bought (sold, negative) on
    the spot leg, in the perp's order unit (unsigned): the same BTC for a
    linear perp; for an inverse perp the whole contracts nearest the USD value
    of that BTC plus the BTC its own account holds (funding and PnL settled in
    BTC are hedged with the rest), at its mark."""
    p = book.perp
    if not p.contract_size:
        return abs(spot_qty)
    btc = spot_qty + p.coin
    return float(max(math.floor(abs(btc) * p.price / p.contract_size + 0.5), 0))


def btc_to_buy(book: PositionBook, btc: float, lot: float) -> float:
    """``Collateral.keep_btc``: what an entry hedging ``btc`` buys: only what
    the BTC held lacks, in whole lots (0 when the holding covers it)."""
    missing = btc - book.spot.qty - book.perp.coin
    return math.ceil(missing / lot - 1e-9) * lot if missing > 1e-12 else 0.0


def carry_of(funding: float, fees: float, slippage: float) -> float:
    """Income of a carry: its funding net of fees and slippage."""
    return funding - fees - slippage


def carry(book: PositionBook) -> float:
    """Income of the carry so far: funding net of fees and slippage."""
    return carry_of(book.funding, book.fees, book.slippage)


def close_intents(book: PositionBook, reason: str, pair_id: int) -> list[OrderIntent]:
    """Reduce-only orders that take both legs to zero (each in its venue's
    order unit: an inverse perp's contracts)."""
    out = []
    for acct in (book.spot, book.perp):
        qty = book.collateral.exit_btc(acct, book.perp) if acct is book.spot else acct.units
        if abs(qty) > 1e-12:
            side = Side.SELL if qty > 0 else Side.BUY
            out.append(OrderIntent(acct.venue, side, abs(qty), reason, pair_id, reduce_only=True))
    return out
