"""Structured JSON logs of the runner: one JSON object per line (structlog),
to stdout (where systemd's journal takes it) and optionally a file. Every
line has ``event``, ``wall`` (UTC ISO) and the config hash; engine rows
(intents, orders, fills, funding, alerts, vetoes, transfers) are logged with
their own fields.

Secrets never reach a log: every string a line carries (at any depth, and
the text of any other object logged) goes through ``fundarb.support.scrub`` as the
last step before rendering, whatever the caller formatted; the log file is
created readable by its owner only (0600)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from fundarb.support.scrub import scrub

LOG_FILE_MODE = 0o600


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrubbed(v) for v in value]
    return scrub(str(value))  # an exception, a path, a Decimal ...: its text, scrubbed


def scrub_fields(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every field of the line scrubbed (the last line of defence)."""
    return {k: _scrubbed(v) for k, v in event_dict.items()}


def open_log_file(path: Path) -> TextIO:
    """``path`` for appending, line-buffered; created 0600 (an existing file keeps its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


def _dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(_plain(obj), sort_keys=True, default=str, allow_nan=False)


class _Tee:
    def __init__(self, streams: list[TextIO]) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for s in self.streams:
            s.write(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def run_logger(config_hash: str, mode: str, log_file: Path | None = None, stream: TextIO | None = None) -> Any:
    """A bound structlog logger writing JSON lines (line-buffered: a crash
    loses no line that was written)."""
    streams: list[TextIO] = [stream or sys.stdout]
    if log_file is not None:
        streams.append(open_log_file(log_file))  # lives with the process
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=_Tee(streams)),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="wall"),
            scrub_fields,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    return logger.bind(config_hash=config_hash[:12], mode=mode)
