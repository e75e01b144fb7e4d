"""A trade command with a malformed alert URL, or a trade log on a full disk:
one error line naming what is wrong, nothing opened that is left open, no
traceback (the emulator stands in for the venues on 127.0.0.1)."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys

import pytest

from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import KEYS

pytestmark = pytest.mark.usefixtures("hang_guard")
CLI = [sys.executable, "-X", "dev", "-c", "from fundarb.cli.main import main; main()"]  # dev mode: unclosed things warn
# dev mode turns on asyncio's debug mode (PYTHONASYNCIODEBUG cannot turn it off), which reports a
# callback slower than 0.1 s on a loaded machine; those lines say nothing about the command
SLOW_CALLBACK = re.compile(r"^Executing <.*> took [0-9.]+ seconds$")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_") or k == "FUNDARB_LOCK_DIR"}
    env.update(KEYS, **extra)
    return env


@pytest.mark.parametrize("command", [["positions"], ["trade", "open", "--size", "0.01", "--dry-run"], ["reconcile"]],
                         ids=lambda c: " ".join(c[:2]))
def test_a_malformed_alert_url_is_one_line_before_any_venue_client_is_made(command, tmp_path):
    with running_emulator("2024-06-02T03:00") as server:
        done = subprocess.run([*CLI, *command, "--api-url", server.base_url, "--journal", "t.sqlite"], cwd=tmp_path,
                              env=_env(FUNDARB_ALERT_URLS="tgram//SECRETBOTTOKEN/123"), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)
    lines = [x for x in done.stderr.splitlines() if x.strip() and not SLOW_CALLBACK.match(x)]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "alert URL" in lines[0], done.stderr
    assert "SECRETBOTTOKEN" not in done.stderr + done.stdout
    assert "Unclosed" not in done.stderr and "ResourceWarning" not in done.stderr


def test_a_trade_log_that_cannot_be_created_names_the_file_and_the_cause(tmp_path):
    """A file-size limit of 0 stands in for a full disk: the new trade log
    cannot be written, which is said as such (not "not a trade log"), and no
    half-made file is left under its name."""
    code = ("from fundarb.live.journal import Journal, JournalError\n"
            "try:\n    Journal('state/t.sqlite')\nexcept JournalError as exc:\n    print(exc)\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          preexec_fn=limit)
    assert "state/t.sqlite: cannot open the trade log" in done.stdout, done.stdout + done.stderr
    assert "no meta table" not in done.stdout
    assert not (tmp_path / "state" / "t.sqlite").exists()
