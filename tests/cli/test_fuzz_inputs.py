"""Malformed configs, history files, captures and trade logs through the CLI
(``fuzz_driver.py``, hypothesis): every case ends in success or in one
``error:`` line with exit 2 (or a replay's "differs" verdict, exit 1),
within a time bound and under a memory bound,
with outputs untouched; never a traceback, a hang or an internal error."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("fuzz_driver.py")
EXAMPLES = int(os.environ.get("FUNDARB_FUZZ_EXAMPLES", "30"))  # per kind in CI; raise it for a longer search
MEMORY_BYTES = 6 * 2**30  # the 10.9 GB an inf price once took would be a MemoryError here, not a slow machine


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


@pytest.mark.parametrize("kind", ["config", "history", "capture", "trade_log"])
def test_malformed_input_is_one_line_or_success(kind, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_") or k == "FUNDARB_LOCK_DIR"}
    env["FUNDARB_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, str(DRIVER), kind, str(EXAMPLES), str(tmp_path / "work")], cwd=tmp_path,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
                          preexec_fn=_bounded)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    counts = summary["counts"]
    print(json.dumps(counts))
    assert counts["tried"] >= EXAMPLES // 2
    settled = counts["success"] + counts["one_line_error"] + counts["golden_differs"]
    assert settled == counts["tried"], json.dumps(summary["failures"], indent=1)
