"""A venue clock that goes back: the pacer refuses events stamped further
behind its clock than the bound (never fed as current) and reports the first
refusal per venue once; small jitter is still stamped at the last time."""

from __future__ import annotations

import asyncio

from fundarb.app.runner.pacing import Pacer
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND, MarkPrice, Quote
from fundarb.testkit.builders import T0

S = NS_PER_SECOND
SPOT, PERP = "ex:spot", "ex:perp"


async def _no_rate(at: int) -> float | None:
    return None


def pace_all(p: Pacer, events):
    async def go():
        out = []
        for ev in events:
            out += await p.pace(ev)
        return out
    return asyncio.run(go())


def quote(ts: int, px: float, venue: str = SPOT) -> Quote:
    return Quote(ts, venue, px, px, 1.0, 1.0)


def test_jitter_is_stamped_at_the_last_time():
    p = Pacer(PERP, _no_rate, max_backstep_ns=5 * S)
    out = pace_all(p, [quote(T0 + 10 * S, 100.0), quote(T0 + 8 * S, 101.0)])
    assert [ts for ts, _, _ in out] == [T0 + 10 * S, T0 + 10 * S]
    assert p.clock_problems == [] and p.refused == 0


def test_clock_three_hours_back_is_refused_and_alerted_once():
    p = Pacer(PERP, _no_rate, max_backstep_ns=5 * S)
    now = T0 + 10 * NS_PER_HOUR
    back = now - 3 * NS_PER_HOUR
    out = pace_all(p, [quote(now, 60_000.0), MarkPrice(now, PERP, 60_010.0),
                       quote(back, 40_000.0), quote(back + S, 40_001.0),
                       MarkPrice(back, PERP, 40_000.0)])
    fed = [ev for _, _, ev in out]
    assert all(getattr(ev, "bid", 60_000.0) == 60_000.0 for ev in fed if isinstance(ev, Quote))
    assert all(ev.mark == 60_010.0 for ev in fed if isinstance(ev, MarkPrice))
    assert p.refused == 3
    assert len(p.clock_problems) == 2  # once per venue, not once per event
    assert SPOT in p.clock_problems[0] and "went back" in p.clock_problems[0]
    assert p.last_mark == 60_010.0 and p.now == now
    # back in step: the venue is accepted again, and a new jump is alerted again
    p.clock_problems.clear()
    out = pace_all(p, [quote(now + S, 60_001.0), quote(back, 1.0)])
    assert [ev.bid for _, _, ev in out if isinstance(ev, Quote)] == [60_001.0]
    assert len(p.clock_problems) == 1


def test_an_unstamped_event_is_fed_at_the_last_time():
    p = Pacer(PERP, _no_rate, max_backstep_ns=5 * S)
    out = pace_all(p, [quote(T0 + NS_PER_HOUR, 100.0), quote(0, 101.0)])
    assert [(ts, ev.bid) for ts, _, ev in out if isinstance(ev, Quote)] == [(T0 + NS_PER_HOUR, 100.0),
                                                                            (T0 + NS_PER_HOUR, 101.0)]
    assert p.refused == 0 and p.clock_problems == []
