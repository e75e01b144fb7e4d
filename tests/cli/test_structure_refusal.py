"""The strategy runner does not run the unified structure yet: it refuses
such a config in one line naming the structure, before a trade log is opened
or a venue is asked anything. (The venue commands run every structure:
tests/live/test_coinm_trade.py, tests/live/test_unified_trade.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app

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
