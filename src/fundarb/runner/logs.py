"""Structured JSON logs of the runner: one JSON object per line (structlog),
to stdout (where systemd's journal takes it) and optionally a file. Every
line has ``event``, ``wall`` (UTC ISO) and the config hash; engine rows
(intents, orders, fills, funding, alerts, vetoes, transfers) are logged with
their own fields. Secrets never reach a log: nothing here reads them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
        log_file.parent.mkdir(parents=True, exist_ok=True)
        streams.append(open(log_file, "a", buffering=1, encoding="utf-8"))  # noqa: SIM115 - lives with the process
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=_Tee(streams)),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="wall"),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    return logger.bind(config_hash=config_hash[:12], mode=mode)
