"""`fundarb run --duration` bounds a run in every state: with the venue
unreachable (a closed port on 127.0.0.1) the runner keeps asking, says
each attempt, and stops when its time is up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from fundarb.testkit.runner import KEEP_ENV, runner_config, write_config


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_a_paper_run_against_an_unreachable_venue_stops_at_its_duration(tmp_path):
    config = write_config(runner_config(), tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_") or k in KEEP_ENV}
    cmd = [sys.executable, "-c", "from fundarb.cli.main import main; main()", "run", str(config), "--paper",
           "--api-url", f"http://127.0.0.1:{_closed_port()}", "--duration", "8"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=90)  # the bound of this test, far above the run's own 8 s
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    waits = [x for x in lines if x["event"] == "venue_unreachable_at_start"]
    assert done.returncode == 0, done.stderr
    assert waits and waits[0]["attempt"] == 1 and "retry_in_s" in waits[0]
    assert lines[-1]["event"] == "stopped"
    # a wait of more than 2 s says on stderr what it waits for, the attempt and the next try
    assert "waiting for" in done.stderr and "attempt" in done.stderr
