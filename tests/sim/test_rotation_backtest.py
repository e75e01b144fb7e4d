"""A rotating perp/perp carry on the shipped 8-hour bars and settlements."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import ConfigError, VenueConfig, from_dict, load, project_file, to_dict
from fundarb.core.model import NS_PER_HOUR
from fundarb.core.rotation import Pair
from fundarb.data.history import fmt_time, load_settlements, parse_time
from fundarb.sim.rotation import BAR_NS, FileSource, RotationError, pair_config, plan, run_rotation

SHIPPED = project_file(Path("sims/rotation.toml"))


def window(cfg, start: str, end: str, **rotation):
    data = attrs.evolve(cfg.data, start=start, end=end)
    return attrs.evolve(cfg, data=data, rotation=attrs.evolve(cfg.rotation, **rotation))


@pytest.fixture(scope="module")
def quarter():
    cfg = window(load(SHIPPED), "2023-01-01", "2023-05-01", min_hold_days=3.0, hysteresis_apr=0.0)
    return cfg, run_rotation(cfg)


def test_stretches_follow_the_moves_back_to_back_and_each_starts_with_what_the_last_ended_with(quarter):
    cfg, r = quarter
    assert r.metrics["moves"] >= 1, "a quarter of 2023 with no hysteresis should move at least once"
    assert [s.pair for s in r.stretches] == [m.to for _, m in r.moves][:len(r.stretches)]
    assert r.stretches[0].capital == cfg.capital
    for a, b in zip(r.stretches, r.stretches[1:]):
        assert b.start >= a.end and (b.start - parse_time(cfg.data.start, "s")) % BAR_NS == 0
        fees = a.withdrawals * cfg.transfer.fee
        assert b.capital == pytest.approx(a.result.metrics["final_equity"] - fees, abs=1e-9)
        # a stretch that was told to leave ends flat: nothing carried into the next pair
        assert a.flat
    for s in r.stretches[:-1]:
        held = [pos for ts, pos in zip(s.result.curve["ts"], s.result.curve["in_position"]) if ts < s.told_to_leave]
        exits = [row for kind, row in s.result.log if kind == "intent" and row["reason"] == "exit_rotation"]
        # in position when told to leave: closed by the rotation's exit; flat: nothing to close
        assert bool(exits) == bool(held and held[-1]), (s.pair, fmt_time(s.told_to_leave))
    assert r.metrics["final_equity"] == pytest.approx(r.stretches[-1].result.metrics["final_equity"] - r.stretches[-1].withdrawals * cfg.transfer.fee)


def test_the_whole_run_sums_its_stretches_per_venue(quarter):
    cfg, r = quarter
    m = r.metrics
    assert sum(m["funding_by_venue"].values()) == pytest.approx(m["funding_net"], abs=1e-6)
    # the fees are each venue's trading fees and the collateral moves within a pair
    within = m["transfers_within_pairs"] * cfg.transfer.fee
    assert sum(m["fees_by_venue"].values()) + within == pytest.approx(m["fees"], abs=1e-6)
    assert set(m["funding_by_venue"]) <= {"binanceusdm", "bybit"}
    # the money: equity moved by funding, fees, slippage, basis and the withdrawals, nothing else
    moved = m["funding_net"] - m["fees"] - m["slippage"] + m["basis_pnl"] - m["withdrawal_fees"]
    assert m["net_pnl"] == pytest.approx(moved, abs=0.05)


def test_each_move_is_decided_on_settlements_made_by_then_and_beats_its_bar(quarter):
    cfg, r = quarter
    for _, move in r.moves[1:]:
        assert move.gain_apr > move.bar_apr
    # plan again on history cut at each move: the same move at the same instant (no look-ahead)
    for t, move in r.moves[1:3]:
        cut = window(cfg, cfg.data.start, fmt_time(t + NS_PER_HOUR), min_hold_days=3.0, hysteresis_apr=0.0)
        again = plan(cut, 20_000.0, FileSource())
        assert (t, move.to) in [(u, m.to) for u, m in again]


def test_a_withdrawal_is_paid_for_each_venue_the_capital_leaves():
    cfg = load(SHIPPED)
    lo, hi = parse_time("2023-01-01", "s"), parse_time("2023-02-01", "s")
    one = pair_config(cfg, Pair("bybit", "binanceusdm"), lo, hi, 1000.0)
    assert (one.spot.exchange, one.perp.exchange, one.capital, one.rotation) == ("bybit", "binanceusdm", 1000.0, None)
    from fundarb.sim.rotation import switch_cost

    flip = switch_cost(cfg, Pair("bybit", "binanceusdm"), Pair("binanceusdm", "bybit"), 20_000.0)
    assert flip.withdrawals == 0 and flip.delay_hours == 0  # the same two venues: nothing leaves
    assert flip.round_trips > 0


def test_a_venue_without_a_modelled_liquidation_rule_is_refused_by_name():
    cfg = load(SHIPPED)
    okx = VenueConfig("okx", "BTC/USDT:USDT", taker_fee=0.0005, maker_fee=0.0002)
    with pytest.raises(RotationError, match="okx BTC/USDT:USDT: its liquidation rule is not modelled"):
        run_rotation(attrs.evolve(cfg, rotation=attrs.evolve(cfg.rotation, venues=(okx,))))


def test_okx_settlements_are_read_under_the_venue_s_own_swap_name():
    lo, hi = parse_time("2023-01-01", "s"), parse_time("2023-01-03", "s")
    f = load_settlements(("okx", "BTC/USDT:USDT"), 1.0, lo, hi)
    assert f.height == 7 and set(f["interval"].to_list()) == {8.0}


@pytest.mark.parametrize("change, words", [
    ({"structure": {"kind": "spot_linear"}, "spot": {"symbol": "BTC/USDT"}}, "needs structure.kind = \"perp_perp\""),
    ({"strategy": {"allow_reverse": True}}, "strategy.allow_reverse must be false with [rotation]"),
    ({"rotation": {"venues": [{"exchange": "bybit", "symbol": "BTC/USDT:USDT"}]}}, "is named twice"),
    ({"rotation": {"venues": [{"exchange": "okx", "symbol": "BTC/USD:BTC"}]}}, "must be a linear perpetual"),
    ({"rotation": {"hysteresis_apr": -0.01}}, "rotation.hysteresis_apr must be"),
])
def test_a_rotation_config_that_cannot_rotate_is_refused_with_one_line_naming_the_field(change, words):
    raw = to_dict(load(SHIPPED))
    for section, fields in change.items():
        raw[section] = {**raw.get(section, {}), **fields}
    with pytest.raises(ConfigError) as exc:
        from_dict(raw, "rotation.toml")
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_backtest_of_a_rotation_config_writes_its_report_stretches_and_plot(tmp_path):
    out = tmp_path / "rot"
    result = CliRunner().invoke(app, ["backtest", str(SHIPPED), "--from", "2023-01-01", "--to", "2023-04-01",
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = (out / "stretches.csv").read_text().splitlines()
    assert len(rows) == 1 + len(report["stretches"]) and rows[0].startswith("pair,long,short,start,end")
    assert report["metrics"]["funding_by_venue"] and report["moves"][0]["from"] is None
    assert (out / "rotation.png").read_bytes()[:4] == b"\x89PNG"


def test_a_pair_held_when_the_carry_moves_is_closed_by_the_rotation_and_the_next_starts_flat():
    cfg = window(load(SHIPPED), "2023-01-01", "2023-05-01", min_hold_days=3.0, hysteresis_apr=0.0)
    cfg = attrs.evolve(cfg, strategy=attrs.evolve(cfg.strategy, exit_apr=-0.9, entry_apr=-0.5))  # holds on
    r = run_rotation(cfg)
    closed = [s for s in r.stretches if any(k == "intent" and row["reason"] == "exit_rotation" for k, row in s.result.log)]
    assert len(closed) >= 1
    for s in closed:
        assert s.told_to_leave and s.flat and s.end >= s.told_to_leave
