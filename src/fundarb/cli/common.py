"""What every command shares: the stderr console, the one-line error, the
command group that turns an error meant for the user into that line, and
where the source checkout's files are."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fundarb.core.errors import FundarbError
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


class UserErrorGroup(TyperGroup):
    """A command group where a ``FundarbError`` escaping any of its commands
    (or of a group mounted in it) ends as one ``error:`` line and exit 2.

    The conversion sits in the group rather than in ``fundarb.cli.main.main``
    so that every way of running the app, ``fundarb`` itself or typer's
    ``CliRunner``, behaves the same; a command lets such an error propagate
    and handles only what needs more than that line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FundarbError as exc:
            error_line(str(exc))
            raise typer.Exit(2) from exc
