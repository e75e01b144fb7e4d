"""One trading process per trade log.

The strategy runner holds an exclusive ``fcntl.flock`` on ``<journal>.lock``
for its whole life (and ``fundarb kill --flatten`` while it flattens), so a
second runner on the same trade log is refused, and the manual commands can
see that someone is trading. The kernel drops the lock when the holder's
file is closed, which includes the process dying in any way (``kill -9``
too): there is never a stale lock to clean up by hand.

The lock file holds the holder's pid and start time (rewritten on each
acquire; left in place on release, as "the last holder"). The file is never
deleted: deleting a lock file while another process waits on it would let
two processes lock two different files of the same name.
"""

from __future__ import annotations

import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path

ACQUIRE_TRIES = 5  # a holder() probe holds the lock for microseconds: do not take it for a runner
ACQUIRE_PAUSE_S = 0.02
READ_TRIES = 50  # a fresh holder writes its pid just after locking: wait that long for it
READ_PAUSE_S = 0.02


class RunnerBusy(RuntimeError):
    """The trade log's lock is held by another process (the message names its pid and the lock file)."""

    def __init__(self, message: str, pid: int, lock_path: Path) -> None:
        super().__init__(message)
        self.pid = pid
        self.lock_path = lock_path


def lock_path_of(journal_path: Path) -> Path:
    journal_path = Path(journal_path)
    return journal_path.with_name(journal_path.name + ".lock")


class RunnerLock:
    """An exclusive fcntl.flock on `<journal path>.lock`, held by the strategy
    runner for its whole life; the file holds the holder's pid and start time
    (rewritten on acquire). A killed process (even kill -9) releases it."""

    def __init__(self, journal_path: Path) -> None:
        self.journal_path = Path(journal_path)
        self.path = lock_path_of(self.journal_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunnerLock:
        """Take the lock without waiting for it; RunnerBusy if another holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunnerLock is already held")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            for attempt in range(ACQUIRE_TRIES):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == ACQUIRE_TRIES - 1:
                        pid = _read_pid(fd)
                        raise RunnerBusy(f"the trade log {self.journal_path} is being traded by process "
                                         f"{pid if pid else '(pid unknown)'} (it holds {self.path})",
                                         pid, self.path) from None
                    time.sleep(ACQUIRE_PAUSE_S)
            started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            data = f"{os.getpid()}\n{started}\n".encode()
            # empty it first: a reader then sees nothing (and reads again) or the
            # new holder's whole line, never the last holder's pid
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except BaseException:
            os.close(fd)  # closing drops the lock if it was taken
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunnerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def holder(journal_path: Path) -> int | None:
        """The pid of a live holder, None when nobody holds the lock. Probes
        with a non-blocking flock (released at once); never creates the file.
        0 if the lock is held but the holder's pid cannot be read."""
        path = lock_path_of(journal_path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int:
    """The pid on the lock file's first line; a holder that just took the
    lock may not have written it yet, so it is read again for a little while."""
    for attempt in range(READ_TRIES):
        text = os.pread(fd, 64, 0)
        first, newline, _ = text.partition(b"\n")
        if newline and first.strip().isdigit() and int(first) > 0:  # a whole line: written completely
            return int(first)
        if attempt < READ_TRIES - 1:
            time.sleep(READ_PAUSE_S)
    return 0
