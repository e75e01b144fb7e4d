"""Plausible market data: a price is applied to the book only once it is believable.

Every market price the engine receives (the spot and perp quotes' mids, the
perp's mark, the perp venue's index where its feed carries one) belongs to a
*series* (one per kind and venue). An observation is plausible when it is

- within ``max_jump`` of the last accepted price of its own series (a ratio:
  at most ``last * (1 + max_jump)`` and at least ``last / (1 + max_jump)``),
  and
- within ``max_gap`` (the same kind of ratio) of the last accepted price of
  every other series accepted in the last ``reference_seconds`` (the other
  leg, the mark, the index; an older reference says nothing about now).

The index is judged like any series and, once accepted, is one more
reference: a mark that agrees with the spot quote but not with the venue's
own index is held, and an index that moved with a held mark confirms it.

A plausible observation is accepted. One that is not is HELD: not applied,
reported once (a ``held`` note) however many implausible observations follow
in the same episode. A held price is accepted later when

- it persists: ``confirm_count`` observations in a row at the held level
  (within ``max_gap`` of each other), or observations at that level spanning
  ``confirm_seconds`` (at least two);
- it is confirmed across sources: another series moves the same way to the
  same level (within ``max_gap``), either already accepted there or held there
  itself (both are then accepted, the earlier one first); an observation
  whose own series has not caught up yet but that agrees with every other
  recent series is accepted the same way.

A plausible observation of a series whose price is held ends the episode:
the held price is ``dropped``. Only accepted prices reach the book, so the
drawdown the kill switch measures never rests on a held price.

Pure: no I/O and no clock; time is the observations' own ``ts``. The caller
hands in an opaque ``payload`` with each observation (the engine: the event)
and gets back the payloads to apply, in order.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

NS_PER_SECOND = 1_000_000_000


@attrs.frozen
class GuardLimits:
    """The bounds of the guard (config ``[market_data]``). The defaults sit
    far outside anything real BTC data does (an hour's move of 100%, a perp
    10% away from spot at the same moment) and still catch a price off by a
    factor of 10 or a misplaced decimal point."""

    max_jump: float = 1.0
    max_gap: float = 0.10
    reference_seconds: float = 60.0
    confirm_count: int = 3
    confirm_seconds: float = 60.0

    def __attrs_post_init__(self) -> None:
        for name in ("max_jump", "max_gap", "reference_seconds", "confirm_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"market guard: {name} must be a finite number > 0, got {value}")
        if self.confirm_count < 2:
            raise ValueError(f"market guard: confirm_count must be >= 2, got {self.confirm_count}")


@attrs.frozen(slots=True)
class GuardNote:
    """What the guard did with a series: ``held`` (an episode began),
    ``accepted`` (a held price was confirmed), ``dropped`` (a held price was
    never confirmed: a plausible price came back), ``refused`` (not a
    positive finite number: never applied), ``replaced`` (a settlement's mark
    that was not plausible: the last accepted mark stands in)."""

    ts: int
    series: str
    what: str
    price: float
    reference: float  # the series' last accepted price (nan: none yet)
    message: str


@attrs.define(slots=True)
class _Series:
    key: str
    price: float = math.nan  # last accepted
    ts: int = 0
    held: float = math.nan  # the newest held price of the episode (nan: none held)
    held_first: float = math.nan
    held_ts: int = 0  # the first observation at the held level
    held_count: int = 0
    held_payload: Any = None
    others: tuple[_Series, ...] = ()  # every other series of the guard (kept by ``MarketGuard._get``)


_INF = math.inf


def sure_ratios(bound: float) -> tuple[float, float]:
    """The ratios ``price / reference`` surely within a log bound: a ratio
    strictly between the two has ``-bound <= log(ratio) <= bound`` (the
    margin of 1e-9 dwarfs the rounding of ``exp`` and ``log``), so an
    ordinary price is judged without a log; one outside them is judged by
    its log, as the bound reads: the same verdict either way. (The Monte
    Carlo kernel's precheck of a whole path uses the same ratios.)"""
    return math.exp(-bound) * (1 + 1e-9), math.exp(bound) * (1 - 1e-9)


def _fmt(p: float) -> str:
    return f"{p:,.2f}" if p == p else "none"


class MarketGuard:
    """Per-series state of the checks above; ``notes`` collects what happened
    for the caller to report and clear."""

    __slots__ = ("limits", "series", "notes", "_jump", "_gap", "_jump_lo", "_jump_hi", "_gap_lo", "_gap_hi", "_ref_ns",
                 "_confirm_ns", "held_total")

    def __init__(self, limits: GuardLimits | None = None) -> None:
        self.limits = limits or GuardLimits()
        self.series: dict[str, _Series] = {}
        self.notes: list[GuardNote] = []
        self._jump = math.log1p(self.limits.max_jump)
        self._gap = math.log1p(self.limits.max_gap)
        self._jump_lo, self._jump_hi = sure_ratios(self._jump)
        self._gap_lo, self._gap_hi = sure_ratios(self._gap)
        self._ref_ns = int(round(self.limits.reference_seconds * NS_PER_SECOND))
        self._confirm_ns = int(round(self.limits.confirm_seconds * NS_PER_SECOND))
        self.held_total = 0  # episodes begun

    # --- reading ---------------------------------------------------------------
    def last(self, key: str) -> float:
        """The last accepted price of ``key`` (nan: none yet)."""
        s = self.series.get(key)
        return s.price if s is not None else math.nan

    def is_held(self, key: str) -> bool:
        s = self.series.get(key)
        return s is not None and s.held == s.held

    def seed(self, key: str, ts: int, price: float) -> None:
        """A price known to be right (read from the venue at start): the first
        observations of ``key`` are judged against it."""
        if price > 0 and math.isfinite(price):
            s = self._get(key)
            s.price, s.ts = price, ts

    def _get(self, key: str) -> _Series:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = _Series(key)
            for each in self.series.values():
                each.others = tuple(o for o in self.series.values() if o is not each)
        return s

    # --- judging ---------------------------------------------------------------
    def accept_plain(self, key: str, ts: int, price: float) -> bool:
        """The common case of ``observe``, judged first and cheaply: a price of
        a series that holds nothing, surely within ``max_jump`` of its last
        accepted price and surely within ``max_gap`` of every other recent
        series. Such a price is accepted (True) and needs nothing more; on
        False nothing has changed and ``observe`` judges it in full."""
        s = self.series.get(key)
        if s is None or s.held == s.held:
            return False
        last = s.price
        if not self._jump_lo < price / last < self._jump_hi:  # also False for nan or a first price
            return False
        oldest = ts - self._ref_ns
        lo, hi = self._gap_lo, self._gap_hi
        for other in s.others:
            if other.ts >= oldest and not lo < price / other.price < hi:
                return False
        s.price, s.ts = price, ts
        return True

    def observe(self, key: str, ts: int, price: float, payload: Any = None) -> tuple[Any, ...]:
        """Judge one observation; the payloads to apply now, in order (``()``
        while the price is held)."""
        if self.accept_plain(key, ts, price):
            return (payload,)
        s = self._get(key)
        last = s.price
        if price == last:  # the accepted price again (also a re-observation of what was accepted)
            s.ts = ts
            if s.held == s.held:
                self._drop(s, ts, price)
            return (payload,)
        if not (price > 0.0 and price < _INF):
            self.notes.append(GuardNote(ts, key, "refused", price, last,
                                        f"{key}: price {price!r} is not a positive finite number; not applied"))
            return ()
        if last != last or self._jump_lo < price / last < self._jump_hi:
            jump_ok = True  # the first price, or surely within max_jump (no log needed)
        else:
            jump_ok = -self._jump <= math.log(price / last) <= self._jump
        # the other recent series: the first one ``price`` is too far from (None: none), and whether
        # some series that moved since this one's last accepted price agrees with it
        breach: tuple[str, float] | None = None
        fresh_agree = False
        oldest = ts - self._ref_ns
        lo = self._gap_lo
        hi = self._gap_hi
        for other in self.series.values():
            if other is s:
                continue
            other_price = other.price
            if other_price != other_price or other.ts < oldest:  # none yet, or not recent
                continue
            ratio = price / other_price
            if lo < ratio < hi or -self._gap <= math.log(ratio) <= self._gap:
                if other.ts > s.ts:
                    fresh_agree = True
            elif breach is None:
                breach = (other.key, other_price)
        if jump_ok and breach is None:
            if s.held == s.held:
                self._drop(s, ts, price)
            s.price, s.ts = price, ts
            return (payload,)
        move = math.log(price / last) if last == last else 0.0
        if not jump_ok and breach is None and fresh_agree:
            # the other series are already there: the market moved, this series is catching up
            self._confirm(s, ts, price, "confirmed across sources (the other series had moved there)")
            return (payload,)
        partner = self._held_partner(s, ts, price, move)
        if partner is not None:
            released = partner.held_payload
            self._confirm(partner, ts, partner.held, f"confirmed across sources by {key} at {_fmt(price)}")
            self._confirm(s, ts, price, f"confirmed across sources by {partner.key}")
            return (released, payload)
        return self._hold(s, ts, price, payload, move, breach)

    def _held_partner(self, s: _Series, ts: int, price: float, move: float) -> _Series | None:
        """Another series holding a price at the same level, moved the same way
        and held recently: the two confirm each other."""
        for other in self.series.values():
            if other is s or other.held != other.held or ts - other.held_ts > self._ref_ns:
                continue
            if not -self._gap <= math.log(price / other.held) <= self._gap:
                continue
            their = math.log(other.held / other.price) if other.price == other.price else 0.0
            if move == 0.0 or their == 0.0 or (move > 0) == (their > 0):
                return other
        return None

    def _hold(self, s: _Series, ts: int, price: float, payload: Any, move: float,
              breach: tuple[str, float] | None) -> tuple[Any, ...]:
        lim = self.limits
        if s.held == s.held and -self._gap <= math.log(price / s.held) <= self._gap:
            s.held_count += 1
            s.held, s.held_payload = price, payload
            span = ts - s.held_ts
            if s.held_count >= lim.confirm_count or span >= self._confirm_ns:
                self._confirm(s, ts, price, f"persisted: {s.held_count} observations over {span / NS_PER_SECOND:g} s")
                return (payload,)
            return ()
        new_episode = s.held != s.held
        s.held, s.held_ts, s.held_count, s.held_payload = price, ts, 1, payload
        if new_episode:
            s.held_first = price
            self.held_total += 1
            if not -self._jump <= move <= self._jump:
                why = (f"{move_pct(move)} from the last accepted {_fmt(s.price)} (limit "
                       f"{self.limits.max_jump:.0%})")
            else:
                assert breach is not None
                why = (f"{move_pct(math.log(price / breach[1]))} away from {breach[0]} at {_fmt(breach[1])} "
                       f"(limit {self.limits.max_gap:.0%})")
            self.notes.append(GuardNote(
                ts, s.key, "held", price, s.price,
                f"{s.key}: price {_fmt(price)} is {why}: held, not applied to the book; accepted only if it "
                f"persists ({lim.confirm_count} observations or {lim.confirm_seconds:g} s) or another "
                "source moves the same way"))
        return ()

    def _confirm(self, s: _Series, ts: int, price: float, how: str) -> None:
        if s.held == s.held:
            self.notes.append(GuardNote(ts, s.key, "accepted", price, s.price,
                                        f"{s.key}: price {_fmt(price)} (held since {_fmt(s.held_first)}) accepted: {how}"))
        s.price, s.ts = price, ts
        s.held = math.nan
        s.held_payload = None
        s.held_count = 0

    def _drop(self, s: _Series, ts: int, price: float) -> None:
        self.notes.append(GuardNote(ts, s.key, "dropped", s.held, s.price,
                                    f"{s.key}: held price {_fmt(s.held_first)} dropped after {s.held_count} "
                                    f"observation(s): a plausible price {_fmt(price)} came back"))
        s.held = math.nan
        s.held_payload = None
        s.held_count = 0

    # --- a price used once -------------------------------------------------------
    def settlement_price(self, key: str, ts: int, price: float) -> float:
        """The price a one-off use (a funding settlement's mark) should take:
        ``price`` when it is plausible against the last accepted price of
        ``key`` (or there is none), else that accepted price (noted)."""
        last = self.last(key)
        if last != last or price == last:
            return price
        ok = price > 0 and price < math.inf and -self._jump <= math.log(price / last) <= self._jump
        if ok:
            return price
        self.notes.append(GuardNote(ts, key, "replaced", price, last,
                                    f"{key}: settlement price {_fmt(price)} is not plausible against the last "
                                    f"accepted {_fmt(last)}; the accepted price stands in"))
        return last


def move_pct(log_move: float) -> str:
    """A log move as a signed percentage (+900% for a price ten times the reference)."""
    return f"{math.expm1(log_move):+.0%}"
