"""The strategy runner does not run the unified structure yet: it refuses
such a config in one line naming the structure, before a trade log is opened
or a venue is asked anything. (The venue commands run every structure:
tests/live/test_coinm_trade.py, tests/live/test_unified_trade.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import project_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["--paper", "--live"])
def test_run_refuses_a_unified_config(mode, tmp_path):
    journal = tmp_path / "t.sqlite"
    result = CliRunner().invoke(app, ["run", str(ROOT / "sims" / "unified.toml"), mode, "--journal", str(journal),
                                      "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config") and "structure.kind unified" in lines[0], result.output
    assert not journal.exists()


@pytest.mark.parametrize("command", ["open", "close"])
def test_trade_structure_names_the_structure_the_user_means_and_refuses_another(command, tmp_path):
    """`trade open/close --structure perp_perp` on a config of another structure:
    one line naming both, before any venue is asked or trade log opened."""
    args = ["trade", command, "--structure", "perp_perp", "--config", str(project_file(Path("sims/spot_perp.toml"))),
            "--journal", str(tmp_path / "t.sqlite"), "--api-url", "http://127.0.0.1:9", "--yes"]
    if command == "open":
        args += ["--size", "0.01"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert "--structure perp_perp: config spot_perp is structure.kind spot_linear" in res.output
    assert "sims/perp_perp.toml" in res.output and not (tmp_path / "t.sqlite").exists()
    bad = CliRunner().invoke(app, ["trade", command, "--structure", "perp", *args[4:]])
    assert bad.exit_code == 2 and "--structure must be one of spot_linear, coin_margined, unified, perp_perp" in bad.output
