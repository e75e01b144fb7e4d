"""Heap-ordered event queue: (time, priority, sequence) decides the order of
simultaneous events, so a run is the same on every machine."""

from __future__ import annotations

import heapq
from typing import Any

# Priorities within one instant: market data first, then funding settles the
# positions held at that instant, then orders and transfers, then the timer.
P_QUOTE = 0
P_MARK = 1
P_FUNDING = 2
P_RATE = 3
P_ORDER = 4
P_CANCEL = 5
P_EXPIRY = 6
P_TRANSFER = 7
P_TIMER = 9


class EventQueue:
    __slots__ = ("heap", "_seq")

    def __init__(self) -> None:
        # (ts, priority, sequence, item); readers may peek at heap[0]
        self.heap: list[tuple[int, int, int, Any]] = []
        self._seq = 0

    def push(self, ts: int, prio: int, item: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (ts, prio, self._seq, item))

    def pop(self) -> tuple[int, int, Any]:
        ts, prio, _, item = heapq.heappop(self.heap)
        return ts, prio, item

    def __len__(self) -> int:
        return len(self.heap)
