"""The only source of time the core sees."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SimClock:
    """A clock that only moves when the event loop moves it, and never back."""

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)

    def now_ns(self) -> int:
        return self._now

    def advance_to(self, ts: int) -> None:
        if ts < self._now:
            raise ValueError(f"clock cannot go back: {ts} < {self._now}")
        self._now = ts
