"""Where Monte Carlo chunks run: in this process, on a local Dask cluster
started for the study, or on an existing cluster.

Every chunk's result is keyed by its task number, never by which worker ran it
or when it finished, so a study's output is the same for any worker count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from fundarb.core.errors import FundarbError

MAX_LOCAL_WORKERS = 64
CONNECT_TIMEOUT = "5s"
_SCHEDULER = re.compile(r"(tcp|tls)://[A-Za-z0-9.\-\[\]:]+:(\d{1,5})")


class ClusterError(FundarbError, ValueError):
    """A cluster that cannot be started or reached; the message says which."""


class ChunkRunner(Protocol):
    workers: int

    def run(self, fn: Callable[..., Any], shared: Any, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Yield (task number, fn(shared, *task)) as tasks finish."""
        ...


class InProcess:
    workers = 1

    def run(self, fn: Callable[..., Any], shared: Any, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        for i, task in enumerate(tasks):
            yield i, fn(shared, *task)


class DaskRunner:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(len(client.scheduler_info().get("workers", {})), 1)

    def run(self, fn: Callable[..., Any], shared: Any, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        # the market source goes to every worker once, not with every task
        shared_future = self.client.scatter(shared, broadcast=True)
        futures = {self.client.submit(fn, shared_future, *task, pure=False): i for i, task in enumerate(tasks)}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            self.client.cancel(list(futures))


def check_scheduler_address(address: str) -> None:
    m = _SCHEDULER.fullmatch(address)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ClusterError(f"--scheduler {address!r} is not an address like tcp://127.0.0.1:8786")


@contextmanager
def chunk_runner(workers: int | None = None, scheduler: str | None = None) -> Iterator[ChunkRunner]:
    """In-process by default; ``workers`` starts a local Dask cluster on
    127.0.0.1 for the duration; ``scheduler`` connects to a running one."""
    if workers is not None and scheduler is not None:
        raise ClusterError("give --workers (start a local cluster) or --scheduler (use a running one), not both")
    if scheduler is not None:
        check_scheduler_address(scheduler)
        with _connect(scheduler) as client:
            yield DaskRunner(client)
        return
    if workers is None:
        yield InProcess()
        return
    if not 1 <= workers <= MAX_LOCAL_WORKERS:
        raise ClusterError(f"--workers must be between 1 and {MAX_LOCAL_WORKERS}, got {workers}")
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:
        yield DaskRunner(client)


@contextmanager
def _connect(address: str) -> Iterator[Any]:
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT}: {exc}") from None
    try:
        if not client.scheduler_info().get("workers"):
            raise ClusterError(f"the Dask scheduler at {address} has no workers")
        yield client
    finally:
        client.close()
