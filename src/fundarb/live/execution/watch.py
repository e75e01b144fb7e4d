"""The long-running side of the live backend: both legs' market feeds
(websockets where the venue has them, REST polling otherwise) and the
reconciliation that runs every ``live.reconcile_interval_seconds`` and after
every websocket reconnect. Market events go to ``on_event`` as core events
(Quote, MarkPrice, FundingRate); the monitor and the runner consume them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs

from fundarb.core.model import MarketKind
from fundarb.live.ccxt.feed import MarketFeed
from fundarb.live.execution.reconcile import Reconciliation, reconcile_every, reconcile_if_alone
from fundarb.live.execution.session import LiveSession
from fundarb.support.scrub import describe


@attrs.define
class LiveWatch:
    session: LiveSession
    on_event: Callable[[object], None]
    use_websocket: bool | None = None
    unstamped_ns: Callable[[], int] | None = None  # see MarketFeed
    reconciling: bool = True  # False: feeds only (another process, the runner, owns the trade log)
    max_silence_s: float | Callable[[], float | None] | None = None  # the watchdog on data age (see MarketFeed)
    on_stale: Callable[[str, str, float], None] | None = None
    feeds: list[MarketFeed] = attrs.field(factory=list)
    reconciliations: list[Reconciliation] = attrs.field(factory=list)
    _pending: set = attrs.field(factory=set)

    async def _after_reconnect(self, account: str) -> None:
        if not self.reconciling:
            return
        # a reconnect may have hidden fills, cancels or funding: look again at
        # once, beside the feed (a reconciliation waits for any operation in
        # flight, and the feed's prices must not wait with it)
        task = asyncio.create_task(self._reconcile_after_reconnect())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reconcile_after_reconnect(self) -> None:
        try:
            rec = await reconcile_if_alone(self.session, "reconnect")
            if rec is not None:
                self.reconciliations.append(rec)
        except Exception as exc:  # noqa: BLE001 - the periodic reconciliation tries again
            self.session.alert("reconciliation_failed", f"after a reconnect: {describe(exc)}")

    def __attrs_post_init__(self) -> None:
        self.feeds = [MarketFeed(leg.exchange, account=leg.account, symbol=leg.symbol,
                                 kind=MarketKind.PERP if leg.market.get("swap") else MarketKind.SPOT,
                                 on_event=self.on_event, on_reconnect=self._after_reconnect,
                                 use_websocket=self.use_websocket, call=leg.queue.call,
                                 unstamped_ns=self.unstamped_ns, max_silence_s=self.max_silence_s,
                                 on_stale=self.on_stale)
                      for leg in self.session.legs]

    async def run(self, stop: asyncio.Event) -> None:
        """Feed both legs and reconcile until ``stop`` is set."""
        s = self.session
        tasks = [asyncio.create_task(f.run()) for f in self.feeds]
        if self.reconciling:
            tasks.append(asyncio.create_task(reconcile_every(s, stop)))
        try:
            await stop.wait()
        finally:
            tasks += list(self._pending)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
