"""The venue commands and the strategy runner do not run the unified
structure yet: each refuses such a config in one line naming the structure,
before a trade log is opened or a venue is asked anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [["trade", "open", "--size", "0.01"], ["trade", "close"], ["positions"], ["reconcile"]]


@pytest.mark.parametrize("sim", ["unified"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_venue_command_refuses_a_structure_it_does_not_run(command, sim, tmp_path):
    journal = tmp_path / "t.sqlite"
    result = CliRunner().invoke(app, [*command, "--config", str(ROOT / "sims" / f"{sim}.toml"), "--journal", str(journal),
                                      "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config") and f"structure.kind {sim}" in lines[0], result.output
    assert not journal.exists()


@pytest.mark.parametrize("mode", ["--paper", "--live"])
def test_run_refuses_a_unified_config(mode, tmp_path):
    journal = tmp_path / "t.sqlite"
    result = CliRunner().invoke(app, ["run", str(ROOT / "sims" / "unified.toml"), mode, "--journal", str(journal),
                                      "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert "structure.kind unified" in result.output and not journal.exists()
