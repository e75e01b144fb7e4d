"""Runs too short to annualise, and runs that send no orders: the summary,
report.json, the gates, the PNG and the golden comparison say what the run
did (PnL, funding, fees in USDT) and why the rest is n/a, instead of
extrapolating minutes to a year or drawing empty panels over 1970."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.dates as mdates
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from fundarb.app.replay import GOLDEN_FILE, compare_golden, golden_text, run_replay
from fundarb.cli.main import app
from fundarb.config import load
from fundarb.core.metrics import MIN_ANNUALISE_DAYS, span_text
from fundarb.output.report import plot
from fundarb.replay.parse import load_recording
from fundarb.sim.backtest import ANNUALISED_METRICS, GATES

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
BINANCE = ROOT / "recordings" / "binance_btcusdt_2024-08-08"
BITMEX = ROOT / "recordings" / "bitmex_xbtusd_2021-07-22"
ANNUALISED_GATES = {name for name, key, _, _ in GATES if key in ANNUALISED_METRICS}
runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("replay-cache")


def replay_cli(name: str, out: Path, cache: Path):
    res = runner.invoke(app, ["replay", name, "--out", str(out), "--cache-dir", str(cache)],
                        env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output, json.loads((out / "report.json").read_text())


def gate_rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0] != "gate":
            rows[cells[0]] = cells[2]
    return rows


def test_the_threshold_and_the_way_a_window_is_named():
    assert MIN_ANNUALISE_DAYS == 7.0
    assert span_text(28 / 86_400) == "28 s"
    assert span_text(650.4 / 86_400) == "11 min"
    assert span_text(1.5) == "36 h"
    assert span_text(3.0) == "3.0 days"


def test_an_eleven_minute_replay_gives_pnl_funding_and_fees_not_an_apr(tmp_path, cache):
    output, report = replay_cli("binance_btcusdt_2024-08-08", tmp_path / "o", cache)
    assert "window 11 min: too short to annualise" in output
    # no annualised figure anywhere: not the -8,988% APR nor the -100% CAGR
    for key in ANNUALISED_METRICS:
        assert key not in output, key
        assert key not in report["metrics"], key
    assert "8988" not in output and "-100.00%" not in output
    for key in ("net_pnl", "funding_received", "fees"):
        assert key in output and key in report["metrics"]
    assert report["metrics"]["net_pnl"] == pytest.approx(-185.385, abs=1e-3)
    # the gates that need annualised figures are n/a, the others judged as before
    rows = gate_rows(output)
    assert {g for g, r in rows.items() if r == "n/a (window too short)"} == ANNUALISED_GATES
    assert rows["net funding after fees > 0"] == "FAIL" and rows["MaxDD < 5%"] == "PASS"
    assert "1 gate(s) fail; 2 n/a (window too short)" in output
    gates = {g["gate"]: g for g in report["gates"]}
    for name in ANNUALISED_GATES:
        assert gates[name]["passed"] is None and gates[name]["value"] is None
        assert gates[name]["result"] == "n/a (window too short)"
    assert report["all_gates_passed"] is False
    assert report["not_applicable"] == dict.fromkeys(sorted(ANNUALISED_METRICS), "window 11 min: too short to annualise")
    assert any("too short to annualise" in n for n in report["notes"])
    # and the golden verdict is there, matching
    assert "golden" in output and "matches" in output


def test_a_short_backtest_is_not_annualised_and_a_long_enough_one_is(tmp_path):
    res = runner.invoke(app, ["backtest", str(BASELINE), "--from", "2024-01-01", "--to", "2024-01-04",
                              "--out", str(tmp_path / "short")], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "window 3.0 days: too short to annualise" in res.output
    short = json.loads((tmp_path / "short" / "report.json").read_text())
    assert not set(ANNUALISED_METRICS) & set(short["metrics"])
    res = runner.invoke(app, ["backtest", str(BASELINE), "--from", "2021-08-01", "--to", "2021-08-09",
                              "--out", str(tmp_path / "week")], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    week = json.loads((tmp_path / "week" / "report.json").read_text())
    assert week["metrics"]["days"] >= MIN_ANNUALISE_DAYS
    assert set(ANNUALISED_METRICS) <= set(week["metrics"]) and week["not_applicable"] == {}
    assert "too short" not in res.output and "n/a" not in res.output
    assert all(g["passed"] in (True, False) for g in week["gates"])


def test_a_replay_without_orders_says_so_and_has_no_fill_rate(tmp_path, cache):
    output, report = replay_cli("bitmex_xbtusd_2021-07-22", tmp_path / "o", cache)
    assert "no orders" in output and "100.00%" not in output
    assert "fill_rate" not in report["metrics"] and report["not_applicable"]["fill_rate"] == "no orders"
    assert gate_rows(output)["fill rate > 95%"] == "n/a (no orders)"
    fill_gate = next(g for g in report["gates"] if g["metric"] == "fill_rate")
    assert fill_gate["passed"] is None and fill_gate["result"] == "n/a (no orders)"
    assert "window 28 s: too short to annualise" in output


def drawn(monkeypatch, result, tmp_path) -> Figure:
    figures = []
    real = Figure.savefig

    def keep(fig, *a, **k):
        figures.append(fig)
        return real(fig, *a, **k)

    monkeypatch.setattr(Figure, "savefig", keep)
    plot(result, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    return figures[0]


def texts(fig: Figure) -> str:
    return "\n".join([*(t.get_text() for ax in fig.axes for t in ax.texts), *(ax.get_title(loc="left") for ax in fig.axes)])


def test_the_png_of_a_run_without_orders_shows_its_window_and_a_note(monkeypatch, tmp_path, cache):
    rec = load_recording(BITMEX)
    result, _ = run_replay(rec, load(ROOT / "sims" / rec.config), cache)
    fig = drawn(monkeypatch, result, tmp_path)
    assert len(fig.axes) == 1  # one panel with the note, not four empty ones
    assert "no orders" in texts(fig)
    lo, hi = (mdates.num2date(x) for x in fig.axes[0].get_xlim())
    start = datetime(2021, 7, 22, 22, 36, 10, tzinfo=UTC)
    assert abs((lo - start).total_seconds()) < 1 and abs((hi - start).total_seconds() - 28) < 1


def test_the_png_of_a_short_replay_heads_with_pnl_not_apr(monkeypatch, tmp_path, cache):
    rec = load_recording(BINANCE)
    result, _ = run_replay(rec, load(ROOT / "sims" / rec.config), cache)
    fig = drawn(monkeypatch, result, tmp_path)
    assert len(fig.axes) == 4
    head = texts(fig)
    assert "net PnL -185.39 USDT" in head and "too short to annualise" in head and "APR" not in head
    lo, hi = (mdates.num2date(x) for x in fig.axes[-1].get_xlim())
    assert lo.year == 2024 and (hi - lo).total_seconds() == pytest.approx(650.4, abs=1)


def test_a_golden_file_written_with_annualised_metrics_still_compares(cache):
    """A golden written before short windows lost their APR, CAGR and Sharpe
    holds them; the comparison ignores exactly those and nothing else."""
    rec = load_recording(BINANCE)
    result, _ = run_replay(rec, load(ROOT / "sims" / rec.config), cache)
    assert golden_text(result) == (BINANCE / GOLDEN_FILE).read_text()
    legacy = json.loads(golden_text(result))
    legacy["metrics"].update(net_apr=-89.88277562734991, cagr=-1.0, sharpe=0.0)
    same, ignored = compare_golden(json.dumps(legacy, indent=1), result)
    assert same and ignored == ["cagr", "net_apr", "sharpe"]
    legacy["metrics"]["fees"] += 1.0
    same, _ = compare_golden(json.dumps(legacy), result)
    assert not same


def test_replay_says_a_legacy_golden_matches_and_what_it_ignored(tmp_path, cache):
    import shutil

    folder = tmp_path / "rec"
    shutil.copytree(BITMEX, folder)
    golden = folder / GOLDEN_FILE
    legacy = json.loads(golden.read_text())
    legacy["metrics"].update(net_apr=0.0, fill_rate=1.0)
    golden.write_text(json.dumps(legacy, indent=1))
    res = runner.invoke(app, ["replay", str(folder), "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "-q"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "matches" in res.output and "ignored" in res.output and "fill_rate, net_apr" in res.output
