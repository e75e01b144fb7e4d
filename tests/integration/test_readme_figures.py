"""The figures README.md shows for the default run are what the default run gives."""

import re
from pathlib import Path

from typer.testing import CliRunner

from fundarb.cli import app

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
