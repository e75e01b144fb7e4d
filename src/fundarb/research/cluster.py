"""Where Monte Carlo chunks run: in this process, on a local Dask cluster
started for the study, or on an existing cluster.

Every chunk's result is keyed by its task number, never by which worker ran it
or when it finished, so a study's output is the same for any worker count.
"""

from __future__ import annotations

import logging
import os
import re
import sys
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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system
    tells it), at most MAX_LOCAL_WORKERS."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_LOCAL_WORKERS))


# while chunks share the interpreter, it hands the lock between threads this often (seconds; Python's
# default is 5 ms): a chunk coming back from the compiled kernel, which runs without the lock, should not
# wait out a whole default interval for the Python between kernel calls of another
SWITCH_INTERVAL = 0.0005


class InProcess:
    """Chunks in this process, on ``threads`` threads. The path kernel and the
    bootstrap run compiled without the interpreter lock, so kernel chunks run
    side by side on several cores without starting worker processes; a
    simulator chunk holds the lock, and threads gain it nothing."""

    def __init__(self, threads: int = 1) -> None:
        if not 1 <= threads <= MAX_LOCAL_WORKERS:
            raise ClusterError(f"threads must be between 1 and {MAX_LOCAL_WORKERS}, got {threads}")
        self.threads = self.workers = threads

    def run(self, fn: Callable[..., Any], shared: Any, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        if self.threads == 1 or len(tasks) < 2:
            for i, task in enumerate(tasks):
                yield i, fn(shared, *task)
            return
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        previous = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        pool = ThreadPoolExecutor(max_workers=min(self.threads, len(tasks)), thread_name_prefix="fundarb-chunk")
        try:
            pending = {pool.submit(fn, shared, *task): i for i, task in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=pending.__getitem__):
                    yield pending.pop(fut), fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            sys.setswitchinterval(previous)


class DaskRunner:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(len(client.scheduler_info().get("workers", {})), 1)

    def run(self, fn: Callable[..., Any], shared: Any, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        # the market source goes to every worker once, not with every task
        shared_future = self.client.scatter(shared, broadcast=True, hash=False)  # a key of its own: an earlier run releasing its copy cannot take this one
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
    """In this process by default, on a thread per usable core; ``workers``
    starts a local Dask cluster on 127.0.0.1 for the duration; ``scheduler``
    connects to a running one."""
    if workers is not None and scheduler is not None:
        raise ClusterError("give --workers (start a local cluster) or --scheduler (use a running one), not both")
    if scheduler is not None:
        check_scheduler_address(scheduler)
        with _connect(scheduler) as client:
            yield DaskRunner(client)
        return
    if workers is None:
        yield InProcess(usable_cores())
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
