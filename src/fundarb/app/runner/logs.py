"""Structured JSON logs of the runner: one JSON object per line (structlog),
to stdout (where systemd's journal takes it) and optionally a file. Every
line has ``event``, ``wall`` (UTC ISO) and the config hash; engine rows
(intents, orders, fills, funding, alerts, vetoes, transfers) are logged with
their own fields.

Secrets never reach a log: every string a line carries (at any depth, and
the text of any other object logged) goes through ``fundarb.support.scrub`` as the
last step before rendering, whatever the caller formatted; the log file is
created readable by its owner only (0600).

The modules that log through the standard library (the live feeds,
reconciliation: ``logging.getLogger(__name__)`` under ``fundarb``) join the
same log: ``run_logger`` puts one handler on the ``fundarb`` logger whose
``structlog.stdlib.ProcessorFormatter`` renders each record (INFO and above)
as a JSON line with the runner's fields (``event``: the message, ``level``,
``wall``, the config hash and mode) plus ``logger`` (the module) and any
``extra`` fields, scrubbed the same way. The last runner logger made in a
process is the one that gets them. Until a runner logger is made nothing is
added: those records go where the standard library sends them otherwise."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from fundarb.support.scrub import ScrubRecords, scrub

LOG_FILE_MODE = 0o600
STDLIB_LOGGER = "fundarb"  # the parent of every module logger of the package
STDLIB_LEVEL = logging.INFO


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


def scrub_fields(logger: Any, method: str, event_dict: EventDict) -> EventDict:
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
    """Writes to every stream; None stands for ``sys.stdout`` at the time of writing."""

    def __init__(self, streams: list[TextIO | None]) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for s in self.streams:
            (s or sys.stdout).write(text)

    def flush(self) -> None:
        for s in self.streams:
            (s or sys.stdout).flush()


class _RunLogHandler(logging.StreamHandler[Any]):
    """The handler ``capture_stdlib`` puts on the ``fundarb`` logger (one at a time)."""


def _runner_fields(config_hash: str, mode: str) -> Processor:
    def add(logger: Any, method: str, event_dict: EventDict) -> EventDict:
        event_dict["config_hash"], event_dict["mode"] = config_hash[:12], mode
        return event_dict

    return add


def capture_stdlib(out: Any, config_hash: str, mode: str) -> logging.Handler:
    """Send the records of the ``fundarb`` stdlib loggers to ``out`` as JSON
    lines with the runner's fields, replacing the handler an earlier call put
    there; the ``fundarb`` logger passes INFO and above unless a level was set
    on it. Returns the handler."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _runner_fields(config_hash, mode),
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="wall"),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_fields,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    handler = _RunLogHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(ScrubRecords())  # a record whose message cannot be formatted is dropped, never printed raw
    parent = logging.getLogger(STDLIB_LOGGER)
    for old in [h for h in parent.handlers if isinstance(h, _RunLogHandler)]:
        parent.removeHandler(old)
    parent.addHandler(handler)
    if parent.level == logging.NOTSET:
        parent.setLevel(STDLIB_LEVEL)
    return handler


def run_logger(config_hash: str, mode: str, log_file: Path | None = None, stream: TextIO | None = None) -> Any:
    """A bound structlog logger writing JSON lines (line-buffered: a crash
    loses no line that was written); the records of the package's stdlib
    loggers go to the same lines (``capture_stdlib``)."""
    streams: list[TextIO | None] = [stream]
    if log_file is not None:
        streams.append(open_log_file(log_file))  # lives with the process
    out = _Tee(streams)
    capture_stdlib(out, config_hash, mode)
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="wall"),
            scrub_fields,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    return logger.bind(config_hash=config_hash[:12], mode=mode)
