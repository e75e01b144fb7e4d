"""The runner's pacer: live feed events -> the engine's time-ordered stream,
with the hourly timers and the funding settlements a live feed does not carry."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.app.runner.pacing import MAX_TIMERS, Pacer
from fundarb.core.model import (
    NS_PER_HOUR,
    FundingRate,
    FundingSettlement,
    MarkPrice,
    Quote,
    Side,
    Timer,
    Trade,
)
from fundarb.sim import queue as q
from fundarb.testkit.builders import T0

H = NS_PER_HOUR
S = 1_000_000_000
MS = 1_000_000
SPOT, PERP = "ex:spot", "ex:perp"


class Rates:
    """The venue's funding history as the pacer's ``settled_rate`` callback:
    instant -> settled rate (missing: the venue cannot say); records the asks."""

    def __init__(self, known: dict[int, float] | None = None) -> None:
        self.known = dict(known or {})
        self.asked: list[int] = []

    async def __call__(self, at: int) -> float | None:
        self.asked.append(at)
        return self.known.get(at)


def pace_all(pacer: Pacer, events) -> list[tuple[int, int, object]]:
    async def go():
        out = []
        for ev in events:
            out += await pacer.pace(ev)
        return out
    return asyncio.run(go())


def quote(ts: int, px: float, venue: str = SPOT) -> Quote:
    return Quote(ts, venue, px, px, 1.0, 1.0)


def rate(ts: int, r: float, nxt: int, interval: float = 8.0) -> FundingRate:
    return FundingRate(ts, PERP, r, interval, nxt, r)


def of(out, kind):
    return [e for _, _, e in out if type(e) is kind]


def stamps(out):
    return [ts for ts, _, _ in out]


# --- time never goes back -----------------------------------------------------------

def test_an_older_event_is_stamped_at_the_last_time_and_otherwise_unchanged():
    p = Pacer(PERP, Rates())
    late = quote(T0 + 5 * S, 60_000.0)
    early = quote(T0 + 3 * S, 60_001.0, PERP)
    out = pace_all(p, [late, early])
    assert out == [(T0 + 5 * S, q.P_QUOTE, late), (T0 + 5 * S, q.P_QUOTE, quote(T0 + 5 * S, 60_001.0, PERP))]
    assert out[1][2].ts == T0 + 5 * S and p.now == T0 + 5 * S


KINDS = st.sampled_from(["spot", "perp", "mark", "trade"])


def make_event(kind: str, ts: int, i: int):
    px = 60_000.0 + i  # a distinct price per input: identifies it in the output
    if kind == "mark":
        return MarkPrice(ts, PERP, px)
    if kind == "trade":
        return Trade(ts, SPOT, Side.BUY, 0.01, px)
    return quote(ts, px, SPOT if kind == "spot" else PERP)


PRIO = {Quote: q.P_QUOTE, MarkPrice: q.P_MARK, Trade: q.P_QUOTE}


@settings(max_examples=150, deadline=None)
@given(start=st.integers(0, 10 * H), steps=st.lists(st.tuples(KINDS, st.integers(-2 * H, 3 * H)), min_size=1, max_size=40),
       started=st.booleans())
def test_stamps_never_go_back_every_event_once_in_order_timers_at_crossed_hours(start, steps, started):
    begin = T0 + start
    p = Pacer(PERP, Rates(), max_backstep_ns=10 * H)  # the stamping rule for any back-step; refusal: test_runner_clock_backwards
    if started:
        p.now = begin  # as the runner starts it: at the venue's clock
    events, ts = [], begin
    for i, (kind, jump) in enumerate(steps):
        ts += jump  # jumps back (out-of-order feeds) and forward (gaps)
        events.append(make_event(kind, ts, i))
    out = pace_all(p, events)
    assert stamps(out) == sorted(stamps(out))
    # every input once, in order, stamped at the running maximum
    passed = [(t, pr, e) for t, pr, e in out if type(e) is not Timer]
    assert len(passed) == len(events)
    last = begin if started else 0
    expect_timers = []
    for ev, (t, pr, e) in zip(events, passed):
        stamped = max(ev.ts, last)
        assert t == e.ts == stamped
        assert type(e) is type(ev) and _same_but_ts(e, ev)
        assert pr == PRIO[type(ev)]
        if last:
            hours = list(range((last // H + 1) * H, stamped + 1, H))
            expect_timers += hours[-MAX_TIMERS:]
        last = stamped
    timers = [(t, pr, e) for t, pr, e in out if type(e) is Timer]
    assert [t for t, _, _ in timers] == expect_timers
    assert all(pr == q.P_TIMER and e.ts == t for t, pr, e in timers)
    assert not p.settlements and not p.unknown  # no announcement: nothing made up


def _same_but_ts(a, b) -> bool:
    fields = [f.name for f in type(a).__attrs_attrs__ if f.name != "ts"]
    return all(getattr(a, f) == getattr(b, f) for f in fields)


# --- hourly timers ------------------------------------------------------------------

def test_a_timer_at_each_whole_hour_crossed_and_at_the_hour_itself():
    p = Pacer(PERP, Rates())
    out = pace_all(p, [quote(T0 + 10 * 60 * S, 1.0), quote(T0 + 3 * H, 2.0), quote(T0 + 3 * H + MS, 3.0),
                       quote(T0 + 4 * H - MS, 4.0)])
    assert [e.ts for e in of(out, Timer)] == [T0 + H, T0 + 2 * H, T0 + 3 * H]
    # each timer goes before the event that crossed its hour
    kinds = [(type(e).__name__, e.ts) for _, _, e in out]
    assert kinds == [("Quote", T0 + 600 * S), ("Timer", T0 + H), ("Timer", T0 + 2 * H), ("Timer", T0 + 3 * H),
                     ("Quote", T0 + 3 * H), ("Quote", T0 + 3 * H + MS), ("Quote", T0 + 4 * H - MS)]


def test_the_first_event_of_a_fresh_pacer_crosses_no_hour():
    p = Pacer(PERP, Rates())
    out = pace_all(p, [quote(T0 + 5 * H + 1, 1.0)])
    assert of(out, Timer) == []


def test_a_long_gap_marks_at_most_max_timers_hours_the_latest_ones():
    p = Pacer(PERP, Rates(), now=T0 + 1)
    end = T0 + 100 * H + 30 * 60 * S
    out = pace_all(p, [quote(end, 1.0)])
    hours = [e.ts for e in of(out, Timer)]
    assert len(hours) == MAX_TIMERS
    assert hours == [T0 + (100 - MAX_TIMERS + 1 + k) * H for k in range(MAX_TIMERS)]
    assert out[-1][2].ts == end and p.now == end


# --- funding settlements --------------------------------------------------------------

N = T0 + 8 * H  # the announced settlement instant (on the hour)


def before_n(r: float = 0.0001) -> list:
    return [MarkPrice(T0 + 60 * S, PERP, 60_000.0), rate(T0 + 2 * 60 * S, r, N),
            MarkPrice(N - 30 * S, PERP, 60_500.0), MarkPrice(N - 20 * S, "other:perp", 1.0),
            quote(N - 10 * S, 61_000.0, PERP)]


def settlement_run(rates: Rates, after: list):
    p = Pacer(PERP, rates, now=T0)
    out_before = pace_all(p, before_n())
    assert of(out_before, FundingSettlement) == [] and rates.asked == []  # nothing before the instant
    out = pace_all(p, after)
    return p, out


def test_settlement_at_the_announced_instant_with_the_venues_settled_rate_and_last_perp_mark():
    rates = Rates({N: 0.00012})
    first_after = MarkPrice(N + 3 * S, PERP, 99_999.0)  # a mark after the instant is not the settlement's
    p, out = settlement_run(rates, [first_after])
    s = of(out, FundingSettlement)
    assert s == [FundingSettlement(N, PERP, 0.00012, 8.0, 60_500.0, "last_mark")]
    assert rates.asked == [N]
    i = next(i for i, (_, _, e) in enumerate(out) if type(e) is FundingSettlement)
    assert out[i][:2] == (N, q.P_FUNDING)
    # just before the first event after it; the instant's own hourly timer after the settlement
    assert out[i + 1:] == [(N, q.P_TIMER, Timer(N)), (N + 3 * S, q.P_MARK, first_after)]
    assert p.settlements == s and p.unknown == []
    assert p.next_settlement == N + 8 * H  # the settlement plus the interval


def test_an_event_exactly_at_the_instant_comes_after_the_settlement():
    _, out = settlement_run(Rates({N: 0.0002}), [quote(N, 62_000.0)])
    events = [e for _, _, e in out if type(e) is not Timer]
    assert [type(e) for e in events] == [FundingSettlement, Quote]


def test_the_announced_rate_stands_in_when_the_venue_cannot_say():
    p, out = settlement_run(Rates(), [quote(N + 5 * S, 1.0)])
    assert of(out, FundingSettlement) == [FundingSettlement(N, PERP, 0.0001, 8.0, 60_500.0, "announced_rate")]
    assert p.unknown == []


def test_no_settlement_is_made_up_when_no_rate_is_known():
    # an instant known (restored state) with no announced rate and no venue answer
    rates = Rates()
    p = Pacer(PERP, rates, now=N - H)
    p.next_settlement = N
    ev = quote(N + 5 * S, 1.0)
    out = pace_all(p, [ev])
    assert of(out, FundingSettlement) == [] and p.settlements == []
    assert p.unknown == [N] and rates.asked == [N]
    assert out[-1] == (N + 5 * S, q.P_QUOTE, ev)
    assert [e.ts for e in of(out, Timer)] == [N]
    assert p.next_settlement == N + 8 * H


def test_the_interval_the_feed_announces_sets_the_next_instant():
    rates = Rates({N: 0.0001, N + 4 * H: 0.0002})
    p = Pacer(PERP, rates, now=T0)
    pace_all(p, [rate(T0 + S, 0.0001, N, interval=4.0), MarkPrice(T0 + 2 * S, PERP, 60_000.0), quote(N + S, 1.0)])
    assert p.next_settlement == N + 4 * H
    out = pace_all(p, [quote(N + 4 * H + S, 1.0)])
    assert of(out, FundingSettlement) == [FundingSettlement(N + 4 * H, PERP, 0.0002, 4.0, 60_000.0, "last_mark")]


def test_several_settlements_in_one_gap_each_once_in_order():
    known = {N: 0.0001, N + 8 * H: -0.0002, N + 16 * H: 0.0003}
    rates = Rates(known)
    p = Pacer(PERP, rates, now=T0)
    pace_all(p, before_n())
    out = pace_all(p, [quote(N + 20 * H, 1.0)])
    s = of(out, FundingSettlement)
    assert [(x.ts, x.rate) for x in s] == sorted(known.items())
    assert all(x.mark == 60_500.0 for x in s)
    assert rates.asked == [N, N + 8 * H, N + 16 * H]
    assert stamps(out) == sorted(stamps(out))
    assert [e.ts for e in of(out, Timer)] == list(range(N, N + 20 * H + 1, H))
    # a late announcement of an instant already settled settles nothing again
    late = rate(N - S, 0.0001, N)
    out = pace_all(p, [late, quote(N + 24 * H + S, 1.0)])
    assert of(out, FundingSettlement) == []  # and its rate does not stand in for the next instant
    assert [x.ts for x in p.settlements] == [N, N + 8 * H, N + 16 * H] and p.unknown == [N + 24 * H]


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.integers(1, 30 * H), min_size=1, max_size=25), back=st.lists(st.integers(0, H), max_size=25))
def test_settlements_once_each_in_order_before_the_first_event_at_or_after_them(gaps, back):
    # announced at T0+1s: N; then perp quotes with random gaps (some stamped
    # earlier than the last); the venue knows every instant's rate
    rates = Rates({N + k * 8 * H: 1e-5 * (k + 1) for k in range(200)})
    p = Pacer(PERP, rates, now=T0)
    events = [rate(T0 + S, 1e-5, N), MarkPrice(T0 + S, PERP, 60_000.0)]
    ts = T0 + S
    for i, g in enumerate(gaps):
        ts += g
        jitter = back[i] if i < len(back) else 0
        events.append(quote(ts - jitter, 1.0, PERP))
    out = pace_all(p, events)
    assert stamps(out) == sorted(stamps(out))
    last = max(e.ts for e in events)
    due = [N + k * 8 * H for k in range(200) if N + k * 8 * H <= last]
    s = of(out, FundingSettlement)
    assert [x.ts for x in s] == due
    assert [x.rate for x in s] == [rates.known[t] for t in due]
    assert rates.asked == due
    # each settlement is directly followed (timers aside) by the first event at or after it
    seq = [e for _, _, e in out if type(e) is not Timer]
    for x in s:
        i = seq.index(x)
        nxt = seq[i + 1]
        assert type(nxt) in (FundingSettlement, Quote) and nxt.ts >= x.ts
        before = [e for e in seq[:i] if type(e) is Quote]
        assert all(e.ts < x.ts for e in before)


def test_one_instant_comes_out_in_priority_order():
    p = Pacer(PERP, Rates({N: 0.0001}), now=T0)
    out = pace_all(p, before_n() + [quote(N + S, 1.0)])
    assert out == sorted(out, key=lambda x: (x[0], x[1]))


def test_an_announcement_stands_in_only_for_its_own_instant():
    p = Pacer(PERP, Rates(), now=T0)
    out = pace_all(p, before_n() + [quote(N + 8 * H + S, 1.0)])  # no word from the feed after N
    assert [(x.ts, x.mark_source) for x in of(out, FundingSettlement)] == [(N, "announced_rate")]
    assert p.unknown == [N + 8 * H]


# --- no silent zero, and the venue's late stamps ---------------------------------------

def test_a_settlement_before_any_mark_waits_for_the_first_mark_and_is_never_booked_at_zero():
    # the exact order of events that booked a settlement at mark 0 for 0 USDT:
    # an announcement, the instant passing, and only then the first mark
    rates = Rates({N: 0.0003})
    p = Pacer(PERP, rates, now=T0)
    out = pace_all(p, [rate(T0 + S, 0.0003, N), quote(N + S, 61_000.0, PERP)])
    assert of(out, FundingSettlement) == [] and p.schedules[PERP].waiting and p.unknown == []
    out = pace_all(p, [MarkPrice(N + 2 * S, PERP, 61_234.5)])
    assert of(out, FundingSettlement) == [FundingSettlement(N, PERP, 0.0003, 8.0, 61_234.5, "first_mark_after")]
    assert out[-1][0] == N + 2 * S and out[-2][2] == MarkPrice(N + 2 * S, PERP, 61_234.5)  # the mark, then what it settled
    assert all(s.mark > 0 for s in p.settlements) and p.problems == []


def test_no_mark_in_time_is_reported_and_nothing_is_made_up():
    rates = Rates({N: 0.0003})
    p = Pacer(PERP, rates, now=T0, mark_wait_ns=5 * 60 * S)
    out = pace_all(p, [rate(T0 + S, 0.0003, N), quote(N + S, 61_000.0, PERP), quote(N + 6 * 60 * S, 61_000.0, PERP),
                       MarkPrice(N + 7 * 60 * S, PERP, 61_100.0)])
    assert of(out, FundingSettlement) == [] and p.settlements == []
    assert p.unknown == [N] and len(p.problems) == 1 and "no perp mark price" in p.problems[0][1]


@settings(max_examples=60, deadline=None)
@given(late_ms=st.integers(0, 999))
def test_an_announced_next_funding_time_a_few_ms_late_is_the_settlement_instant(late_ms):
    p = Pacer(PERP, Rates({N: 0.0001}), now=T0)
    pace_all(p, [MarkPrice(T0 + S, PERP, 60_000.0), rate(T0 + 2 * S, 0.0001, N + late_ms * MS)])
    assert p.next_settlement == N and p.problems == []
    out = pace_all(p, [quote(N + S, 1.0, PERP)])
    assert [s.ts for s in of(out, FundingSettlement)] == [N]


def test_an_announced_time_beyond_the_tolerance_is_not_believed():
    p = Pacer(PERP, Rates(), now=T0)
    pace_all(p, [rate(T0 + S, 0.0001, N + 5 * S)])
    assert p.next_settlement == 0 and p.problems and "off its settlement schedule" in p.problems[0][1]


# --- a perp/perp carry: each perp settles on its own venue's schedule -----------------

LONG = "hl:long"


def test_a_long_perp_settles_hourly_on_its_own_marks_and_the_short_every_eight_hours():
    """An hourly long venue and an 8-hour short one: every instant of each is
    settled once, in time order, at its own perp's last mark and rate."""
    start = T0 - T0 % (8 * H)
    short_rates = Rates({start + 8 * H: 0.0001})
    long_rates = Rates({start + h * H: 0.00001 * h for h in range(1, 10)})
    p = Pacer(PERP, short_rates, long_perp=(LONG, long_rates))
    events = [rate(start + 1, 0.0001, start + 8 * H),
              FundingRate(start + 2, LONG, 0.00001, 1.0, start + H, 0.00001)]
    for h in range(0, 9):
        events += [MarkPrice(start + h * H + 30 * 60 * S, PERP, 60_000.0 + h),
                   MarkPrice(start + h * H + 30 * 60 * S + 1, LONG, 59_990.0 + h)]
        if h < 8:  # the hourly venue announces its next instant each hour
            events.append(FundingRate(start + h * H + 30 * 60 * S + 2, LONG, 0.00001, 1.0, start + (h + 1) * H, 0.0))
    out = pace_all(p, events)
    got = [(s.ts, s.venue, s.rate, s.mark) for s in of(out, FundingSettlement)]
    longs = [g for g in got if g[1] == LONG]
    assert [g[0] for g in longs] == [start + h * H for h in range(1, 9)]
    assert all(rate_ == 0.00001 * ((ts - start) // H) and mark == 59_990.0 + (ts - start) // H - 1
               for ts, _, rate_, mark in longs)
    assert [g for g in got if g[1] == PERP] == [(start + 8 * H, PERP, 0.0001, 60_007.0)]
    assert stamps(out) == sorted(stamps(out)) and p.problems == []


def test_an_announced_instant_more_than_an_interval_ahead_gives_way_to_the_venues_next_instant():
    """A client that computes the next funding time from this machine's clock
    (ccxt's Hyperliquid) announces an instant far from the venue's now: the
    perp settles at the venue's own next instant instead."""
    start = T0 - T0 % H
    p = Pacer(PERP, Rates({start + H: 0.00002, start + 2 * H: 0.00003}))
    far = start + 1000 * 24 * H
    events = [FundingRate(start + 5 * 60 * S, PERP, 0.00002, 1.0, far, 0.00002),
              MarkPrice(start + 10 * 60 * S, PERP, 30_000.0),
              MarkPrice(start + H + 60 * S, PERP, 30_100.0),
              FundingRate(start + H + 2 * 60 * S, PERP, 0.00003, 1.0, far, 0.00003),
              MarkPrice(start + 2 * H + 60 * S, PERP, 30_200.0)]
    out = pace_all(p, events)
    assert [(s.ts, s.rate, s.mark) for s in of(out, FundingSettlement)] == [(start + H, 0.00002, 30_000.0),
                                                                           (start + 2 * H, 0.00003, 30_100.0)]
