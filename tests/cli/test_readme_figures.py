"""The figures README.md shows for the default run are what the default run gives."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def test_readme_sample_matches_the_default_backtest(tmp_path):
    res = CliRunner().invoke(app, ["backtest", str(ROOT / "sims" / "baseline.toml"), "--out", str(tmp_path / "o")],
                             env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    readme = (ROOT / "README.md").read_text()
    sample = readme[readme.index("## What `fundarb backtest` shows"):]
    sample = sample[: sample.index("\n```\n", sample.index("```") + 3)]
    metric_lines = re.findall(r"^  ([a-z_]+)\s+(\S+)\s*$", sample, re.M)
    gate_lines = re.findall(r"^│ (.+?)\s+│\s+(\S+) │ (PASS|FAIL)\s+│$", sample, re.M)
    assert len(metric_lines) >= 8 and len(gate_lines) == 7
    for name, value in metric_lines:
        assert re.search(rf"^\s*{name}\s+{re.escape(value)}\s*$", res.output, re.M), f"README {name} {value}"
    for gate, value, verdict in gate_lines:
        assert re.search(rf"│ {re.escape(gate)}\s+│\s+{re.escape(value)} │ {verdict}", res.output), gate
    header = re.search(r"^baseline  config (\w+)  seed (\d+)$", sample, re.M)
    assert header and f"config {header.group(1)}  seed {header.group(2)}" in res.output


@pytest.mark.slow
def test_readme_montecarlo_sample_matches_the_1000_path_study(tmp_path):
    """Runs README's own command (1,000 paths on 2 local workers, a few minutes)."""
    res = CliRunner().invoke(app, ["montecarlo", str(ROOT / "sims" / "spot_perp.toml"), "--paths", "1000", "--workers", "2",
                                   "--out", str(tmp_path / "mc")], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    readme = (ROOT / "README.md").read_text()
    sample = readme[readme.index("## Monte Carlo studies and sweeps"):]
    sample = sample[sample.index("distribution over paths"): sample.index("## Configuration")]
    rows = re.findall(r"^│ (net APR|Sharpe|MaxDD)\s+│(.+)│$", sample, re.M)
    assert len(rows) == 3
    for name, cells in rows:
        values = [c.strip() for c in cells.split("│")]
        assert re.search(r"│ " + re.escape(name) + r"\s+│\s+" + r"\s+│\s+".join(map(re.escape, values)) + r"\s+│", res.output), name
    for line in ("P(all gates pass) = 1.0%", "liquidations: 0 on 0 of 1000 paths; missed settlements: 0"):
        assert line in sample and line in res.output
    doc = json.loads((tmp_path / "mc" / "montecarlo.json").read_text())
    rates = doc["summary"]["gate_pass_rates"]
    assert f"{rates['net funding after fees > 0']:.1%}" in sample and f"{rates['APR > 10%']:.1%}" in sample


def test_readme_sample_states_the_structure_line_the_backtest_prints(tmp_path):
    res = CliRunner().invoke(app, ["backtest", str(ROOT / "sims" / "baseline.toml"), "--out", str(tmp_path / "o"), "--to",
                                   "2021-09-01"], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert re.search(r"^structure coin_margined: capital used 100,000 USDT, notional 95,000, net APR on capital -?\d", res.output, re.M)
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^structure coin_margined: capital used 100,000 USDT, notional 95,000, net APR on capital 6\.67%", readme, re.M)


def _compare_rows(tmp_path: Path, *args: str) -> list[dict]:
    res = CliRunner().invoke(app, ["compare", "--out", str(tmp_path / "c"), "-q", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return list(json.loads((tmp_path / "c" / "compare.json").read_text())["rows"])


def _in_findings(rows: list[dict]) -> None:
    findings = (ROOT / "docs" / "findings.md").read_text()
    for r in rows:
        line = f"| {r['structure']} | {r['window']} | {r['net_apr']:.2%} | {r['sharpe']:.2f} | {r['max_drawdown']:.2%} |"
        assert line in findings, line


def test_the_structure_figures_of_readme_and_findings_are_what_compare_gives(tmp_path):
    """README and docs/findings.md quote `fundarb compare` on the shipped default: the whole window's numbers must be its."""
    rows = _compare_rows(tmp_path, "--no-years")
    whole = {r["structure"]: r for r in rows}
    assert set(whole) == {"spot_linear", "coin_margined", "coin_margined_btc", "unified"}
    assert all(".." in r["window"] for r in rows)
    readme = (ROOT / "README.md").read_text()
    for kind, r in whole.items():
        assert f"{r['net_apr']:.2%}" in readme, kind
    _in_findings(rows)


@pytest.mark.slow
def test_the_per_year_structure_figures_of_findings_are_what_compare_gives(tmp_path):
    """The per-year rows docs/findings.md quotes (12 more backtests)."""
    rows = [r for r in _compare_rows(tmp_path) if ".." not in r["window"]]
    assert len(rows) == 18  # four structures over four years, perp/perp over the two its bars cover
    _in_findings(rows)
