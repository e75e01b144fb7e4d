"""The stdlib loggers of the live feed and of reconciliation write into the
runner's JSON log once ``app.runner.logs`` has made it, with the runner's
fields and scrubbed; before that they add nothing to any output."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from fundarb.app.runner import logs
from fundarb.app.runner.logs import run_logger
from fundarb.live.ccxt import feed
from fundarb.live.execution import reconcile

API_KEY = "Kq8sZt2LmN4pRw6YvB1x"


@pytest.fixture
def parent_logger():
    """The ``fundarb`` logger, put back as it was afterwards (run_logger leaves its handler there)."""
    parent = logging.getLogger(logs.STDLIB_LOGGER)
    handlers, level = list(parent.handlers), parent.level
    yield parent
    parent.handlers[:] = handlers
    parent.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("module", [feed, reconcile], ids=["feed", "reconcile"])
def test_a_record_becomes_one_json_line_of_the_runner_log(parent_logger, module, tmp_path):
    stream, path = io.StringIO(), tmp_path / "run.jsonl"
    runner_log = run_logger("a" * 64, "live", path, stream=stream)
    runner_log.info("starting", config="c")
    module.log.warning("%s %s: websocket back (reconnect %d)", "binanceusdm:perp", "BTC/USDT:USDT", 2)
    module.log.debug("below the level: not written")
    own, theirs = lines_of(stream)
    assert theirs == {
        "event": "binanceusdm:perp BTC/USDT:USDT: websocket back (reconnect 2)",
        "level": "warning",
        "logger": module.__name__,
        "config_hash": "a" * 12,
        "mode": "live",
        "wall": theirs["wall"],
    }
    assert set(own) - {"config"} <= set(theirs) and theirs["wall"].endswith("Z")
    assert lines_of(io.StringIO(path.read_text())) == [own, theirs]  # the log file gets the same lines


def test_info_records_are_kept_and_extra_fields_and_tracebacks_come_along(parent_logger):
    stream = io.StringIO()
    run_logger("b" * 64, "paper", stream=stream)
    feed.log.info("websocket back", extra={"account": "bybit:perp"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        reconcile.log.exception("periodic reconciliation failed")
    back, failed = lines_of(stream)
    assert back["event"] == "websocket back" and back["level"] == "info" and back["account"] == "bybit:perp"
    assert failed["level"] == "error" and "RuntimeError: boom" in failed["exception"]


def test_a_secret_in_a_record_is_scrubbed(parent_logger, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", API_KEY)
    stream = io.StringIO()
    run_logger("c" * 64, "live", stream=stream)
    feed.log.warning("quote REST fetch_ticker: NetworkError: GET https://api.binance.com/api/v3/x?signature=deadbeef "
                     "X-MBX-APIKEY: %s", API_KEY)
    reconcile.log.warning("periodic reconciliation failed: %s", f"key {API_KEY} refused")
    text = stream.getvalue()
    assert API_KEY not in text and "deadbeef" not in text
    first, second = lines_of(stream)
    assert "https://api.binance.com/api/v3/x?***" in first["event"]
    assert second["event"] == "periodic reconciliation failed: key *** refused"


def test_a_record_that_cannot_be_formatted_is_dropped_not_printed(parent_logger, capsys):
    stream = io.StringIO()
    run_logger("d" * 64, "live", stream=stream)
    feed.log.warning("two fields %s %s", API_KEY)
    assert stream.getvalue() == ""
    assert API_KEY not in capsys.readouterr().err


def test_a_new_runner_log_takes_the_place_of_the_last(parent_logger):
    first, second = io.StringIO(), io.StringIO()
    run_logger("e" * 64, "live", stream=first)
    run_logger("f" * 64, "live", stream=second)
    feed.log.warning("once")
    assert first.getvalue() == "" and [line["event"] for line in lines_of(second)] == ["once"]
    assert sum(isinstance(h, logs._RunLogHandler) for h in parent_logger.handlers) == 1


def test_without_a_runner_log_nothing_is_added():
    code = ("import logging, fundarb.live.ccxt.feed as f, fundarb.live.execution.reconcile as r\n"
            "f.log.info('quiet'); r.log.info('quiet')\n"
            "print(len(logging.getLogger('fundarb').handlers), logging.getLogger('fundarb').level)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 0\n" and "quiet" not in done.stderr
