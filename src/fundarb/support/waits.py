"""What a command is waiting for, while it waits on a venue.

A request that fails and is retried with back-off can keep a command busy for
a minute with nothing to show for it. ``WaitReporter`` is the one place that
says so: every retry loop (``data fetch``, the live request queue, the
runner's wait for an unreachable venue) calls ``on_retry(what, attempt,
next_in_s, error)`` before it sleeps and, where it can, ``done(what)`` once
the request answered or the loop gave up (a caller that cannot, such as the
request queue's hook, leaves the status line to go ``linger_s`` after the
retry went out).

A wait is reported once it is longer than ``quiet_s`` (2 s): from the retry
whose pause takes the time since the wait's first failure beyond it. Blips
(a retry or two within a second) stay silent. On a terminal it is a status
line on stderr (a spinner, what it waits for, the failed attempt, a
countdown to the next one) that disappears when the wait ends; elsewhere (a
pipe, a log file, a test) one plain line per retry, so the log shows each.

Errors are shown by their type and, when the cause is a socket error, its
reason ("connection refused"), never by their text: a ccxt message carries
the request's URL, which for a signed request holds the signature. A caller
whose message is its own passes it as a string.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
from rich.console import Console, ConsoleOptions, RenderResult
from rich.spinner import Spinner
from rich.text import Text

QUIET_S = 2.0  # a wait shorter than this is not shown
LINGER_S = 5.0  # a wait nobody closed (the retry answered) stops showing this long after the retry went out


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``: whether it was set (a loop's pause
    that a stop ends at once)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def error_reason(error: BaseException | str | None) -> str:
    """``NetworkError: connection refused``: the error's type and the reason
    of the socket error behind it, if any (never the error's own text)."""
    if error is None:
        return ""
    if isinstance(error, str):
        return error
    name = type(error).__name__
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and isinstance(cause.errno, int):
            try:
                return f"{name}: {os.strerror(cause.errno).lower()}"
            except ValueError:
                break
        if isinstance(cause, TimeoutError):
            return f"{name}: timed out"
        cause = cause.__cause__ or cause.__context__
    return name


@attrs.define
class _Wait:
    what: str
    started: float  # monotonic: the first failure of this wait
    attempt: int
    due: float  # monotonic: when the next attempt goes out
    reason: str
    attempts: int | None
    shown: bool = False


class WaitReporter:
    """Shows waits on venues longer than ``quiet_s`` (see the module doc).

    ``console``: where to write (default: a stderr console). ``live``: a
    status line (True) or plain lines (False); default: a status line when
    the console is a terminal. Usable as a context manager: leaving it
    clears the status line."""

    def __init__(self, console: Console | None = None, *, quiet_s: float = QUIET_S, linger_s: float = LINGER_S,
                 live: bool | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.console = console if console is not None else Console(stderr=True, highlight=False)
        self.quiet_s, self.linger_s, self.monotonic = quiet_s, linger_s, monotonic
        self.live = (self.console.is_terminal and not self.console.is_dumb_terminal) if live is None else live
        self.reported: list[str] = []  # every retry shown, as its plain line
        self._waits: dict[str, _Wait] = {}
        self._lock = threading.RLock()
        self._status: Any = None  # the rich Live showing the status line, while one shows
        self._spinner = Spinner("dots", style="yellow")

    # -- what the retry loops call ---------------------------------------------------------------

    def on_retry(self, what: str, attempt: int, next_in_s: float, error: BaseException | str | None = None,
                 *, attempts: int | None = None) -> None:
        """Attempt ``attempt`` (1 for the first) of ``what`` failed with
        ``error``; the next goes out in ``next_in_s`` seconds (of at most
        ``attempts``, when known). A first attempt starts a new wait."""
        now = self.monotonic()
        with self._lock:
            wait = self._waits.get(what)
            if wait is None or attempt <= 1:
                wait = self._waits[what] = _Wait(what, now, attempt, now, "", attempts)
            wait.attempt, wait.due, wait.reason, wait.attempts = attempt, now + max(next_in_s, 0.0), \
                error_reason(error), attempts
            if not wait.shown and wait.due - wait.started <= self.quiet_s:
                return
            wait.shown = True
            line = self.line(wait, next_in_s)
            self.reported.append(line)
        if self.live and self._show_status():
            return
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def done(self, what: str) -> None:
        """The wait for ``what`` is over (it answered, or the caller gave up)."""
        with self._lock:
            self._waits.pop(what, None)
            idle = not self._waits
        if idle:
            self._hide_status()

    def close(self) -> None:
        with self._lock:
            self._waits.clear()
        self._hide_status()

    def __enter__(self) -> WaitReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rendering -------------------------------------------------------------------------------

    @staticmethod
    def line(wait: _Wait, next_in_s: float) -> str:
        of = f" of {wait.attempts}" if wait.attempts else ""
        why = f" ({wait.reason})" if wait.reason else ""
        return (f"waiting for {wait.what}: attempt {wait.attempt}{of} failed{why}; "
                f"attempt {wait.attempt + 1} in {max(next_in_s, 0.0):.1f} s")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The status line(s): one per wait being shown, with a countdown."""
        now = self.monotonic()
        with self._lock:
            shown = [w for w in self._waits.values() if w.shown and now <= w.due + self.linger_s]
            for w in shown:
                of = f" of {w.attempts}" if w.attempts else ""
                text = Text()
                text.append(f"waiting for {w.what}", style="bold")
                text.append(f": attempt {w.attempt}{of} failed")
                if w.reason:
                    text.append(f" ({w.reason})", style="yellow")
                left = w.due - now
                text.append(f"; attempt {w.attempt + 1} in {math.ceil(left)} s" if left > 0 else
                            f"; attempt {w.attempt + 1} under way", style="dim")
                self._spinner.update(text=text)
                yield self._spinner.render(console.get_time())

    def _show_status(self) -> bool:
        """Start the status line if it is not up; False when it cannot be (plain lines then)."""
        from rich.errors import LiveError
        from rich.live import Live

        with self._lock:
            if self._status is not None:
                return True
            status = Live(self, console=self.console, transient=True, refresh_per_second=8,
                          redirect_stdout=False, redirect_stderr=False)
            try:
                status.start(refresh=True)
            except LiveError:  # another live display on this console and a rich without nesting
                self.live = False
                return False
            self._status = status
        atexit.register(self.close)  # a process that ends mid-wait gets its cursor back
        return True

    def _hide_status(self) -> None:
        with self._lock:
            status, self._status = self._status, None
        if status is not None:
            status.stop()
            atexit.unregister(self.close)
