"""From a parsed event table to the simulator's tape: quotes, trades, funding
rate updates, marks and settlements (SYNTHETIC event tables)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fundarb.app.replay import _capture_settlements, replay_tape
from fundarb.config import load
from fundarb.core.model import FundingRate, FundingSettlement, MarkPrice, Quote, Timer, Trade
from fundarb.replay.parse import COLUMNS, CaptureFeed, ParsedFeed

CFG = load(Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml")
S = 1_000_000_000
T0 = 1_723_161_000 * S


def table(rows: list[dict]) -> pl.DataFrame:
    cols = {k: [r.get(k) for r in rows] for k in COLUMNS}
    cols["seq"] = list(range(len(rows)))
    return pl.DataFrame(cols, schema=COLUMNS)


def parsed(role: str, rows: list[dict]) -> ParsedFeed:
    feed = CaptureFeed(role, "binance" if role == "spot" else "binanceusdm", "BTC-USDT", "binance_lines", ("x",))
    return ParsedFeed(feed, table(rows), {}, "k", False)


def quote(ts, bid, ask, bs=1.0, as_=2.0):
    return {"ts": ts, "kind": "quote", "bid": bid, "ask": ask, "bid_size": bs, "ask_size": as_}


def test_quotes_trades_and_sampled_marks():
    perp = parsed("perp", [quote(T0, 100.0, 101.0), quote(T0 + S // 2, 102.0, 103.0), quote(T0 + S, 104.0, 105.0),
                           {"ts": T0 + S, "kind": "trade", "price": 104.5, "qty": 0.2, "side": "buy"}])
    spot = parsed("spot", [quote(T0, 99.0, 100.0, None, None)])
    tape = replay_tape(CFG, spot, perp, [], [], np.array([T0 + 2 * S]))
    kinds = [(ts - T0, type(e).__name__) for ts, _, e in tape]
    assert kinds == [(0, "Quote"), (0, "Quote"), (0, "MarkPrice"), (S // 2, "Quote"), (S, "Quote"), (S, "Trade"),
                     (S, "MarkPrice"), (2 * S, "Timer")]
    spot_q = tape[0][2]
    assert spot_q.venue == CFG.spot_account and spot_q.bid_size == CFG.spot.depth_btc  # no size recorded: config depth
    marks = [e for _, _, e in tape if type(e) is MarkPrice]
    assert [m.mark for m in marks] == [100.5, 104.5]  # the perp mid, at most once a second
    trade = next(e for _, _, e in tape if type(e) is Trade)
    assert (trade.venue, trade.side.value, trade.qty, trade.price) == (CFG.perp_account, "buy", 0.2, 104.5)


def test_funding_messages_become_rate_updates_marks_and_settlements():
    nxt = T0 + 60 * S
    perp = parsed("perp", [
        quote(T0, 100.0, 101.0),
        {"ts": T0 + S, "kind": "funding", "rate": 0.0001, "predicted_rate": 0.00012, "next_funding_ts": nxt, "mark": 100.7},
        {"ts": T0 + 2 * S, "kind": "funding", "rate": 0.00011, "predicted_rate": None, "next_funding_ts": nxt, "mark": 100.9},
        quote(T0 + 70 * S, 100.0, 101.0),
    ])
    settlements = _capture_settlements(perp, T0, T0 + 70 * S)
    assert settlements == [(nxt, 0.00011, 8.0, 100.9)]  # the last rate and venue mark published before the settlement
    tape = replay_tape(CFG, None, perp, settlements, [], np.array([], dtype=np.int64))
    rates = [e for _, _, e in tape if type(e) is FundingRate]
    assert [(r.rate, r.predicted_rate, r.next_funding_ts) for r in rates] == [(0.0001, 0.00012, nxt), (0.00011, None, nxt)]
    marks = [e.mark for _, _, e in tape if type(e) is MarkPrice]
    assert marks == [100.7, 100.9]  # the venue's mark: the mid does not stand in
    (settle,) = [e for _, _, e in tape if type(e) is FundingSettlement]
    assert (settle.ts, settle.rate, settle.mark, settle.mark_source) == (nxt, 0.00011, 100.9, "venue")
    # without a mark in the capture, the perp mid then standing is the mark
    bare = [(nxt, 0.00011, 8.0, float("nan"))]
    (settle,) = [e for _, _, e in replay_tape(CFG, None, perp, bare, [], np.array([], dtype=np.int64))
                 if type(e) is FundingSettlement]
    assert (settle.mark, settle.mark_source) == (100.5, "perp_mid")


def test_prior_settlements_seed_the_signal_and_settlement_needs_a_quote():
    perp = parsed("perp", [quote(T0 + 10 * S, 100.0, 101.0)])
    prior = [(T0 - 8 * 3600 * S, 0.0001, 8.0)]
    tape = replay_tape(CFG, None, perp, [], prior, np.array([], dtype=np.int64))
    assert type(tape[0][2]) is FundingSettlement and tape[0][0] == prior[0][0]
    from fundarb.replay.parse import ReplayError

    with pytest.raises(ReplayError, match="no binanceusdm:perp quote before the settlement"):
        replay_tape(CFG, None, perp, [(T0, 0.0001, 8.0, float("nan"))], [], np.array([], dtype=np.int64))


def test_tape_is_time_then_priority_ordered():
    spot = parsed("spot", [quote(T0 + 3, 1.0, 2.0), quote(T0 + 1, 1.0, 2.0)])
    perp = parsed("perp", [quote(T0 + 2, 1.0, 2.0)])
    tape = replay_tape(CFG, spot, perp, [], [], np.array([T0 + 2]))
    keys = [(ts, prio) for ts, prio, _ in tape]
    assert keys == sorted(keys)
    assert [type(e) for ts, _, e in tape if ts == T0 + 2] == [Quote, MarkPrice, Timer]
