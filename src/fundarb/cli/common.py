"""What every command shares: the stderr console, the one-line error, and
where the source checkout's files are."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from fundarb.support.scrub import scrub

err = Console(stderr=True)


def one_line(text: str) -> str:
    return " ".join(text.split())


def error_line(message: str) -> None:
    """``error: ...`` on stderr: one line, secrets scrubbed."""
    err.print(f"[red]error:[/] {escape(one_line(scrub(message)))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    error_line(message)
    raise typer.Exit(code)
