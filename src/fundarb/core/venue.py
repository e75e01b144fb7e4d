"""The exchange interface the engine drives. Three backends implement it:
the discrete-event simulator, the recorded-feed replayer and live ccxt.

``events()`` yields market events (Quote, MarkPrice, FundingRate,
FundingSettlement, Timer) and the venue's answers (OrderUpdate, Fill,
TransferDone, Charge, Alert) in time order; the engine reacts to each and may
call ``submit``, ``cancel`` and ``request_transfer`` before pulling the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from fundarb.core.model import TransferRequest
from fundarb.core.orders import Order


class Venue(Protocol):
    def events(self) -> Iterator[Any]: ...

    def submit(self, order: Order) -> None: ...

    def cancel(self, client_id: str) -> None: ...

    def request_transfer(self, request: TransferRequest) -> None: ...
