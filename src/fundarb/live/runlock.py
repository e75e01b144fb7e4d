"""One actor per venue account (and per trade log).

Every command that can send orders, recover or reconcile (``trade open``,
``trade close``, ``reconcile``, ``kill --flatten``, ``run``) holds an
``ActorLock`` for its whole life: an exclusive ``fcntl.flock`` on
``<journal>.lock`` and one on a lock file per venue identity of the config's
accounts (``fundarb.live.identity``) in the lock folder
(``$FUNDARB_LOCK_DIR``, by default ``~/.local/state/fundarb/locks``). So two
trade logs on one account exclude each other as well as two processes on one
trade log, and a second actor gets one line naming the holder. The kernel
drops a lock when the holder's file is closed, which includes the process
dying in any way (``kill -9`` too): there is never a stale lock to clean up
by hand.

A lock file holds its holder's pid, start time and what it is doing
(rewritten on each acquire; left in place on release, as "the last holder").
The file is never deleted: deleting a lock file while another process waits
on it would let two processes lock two different files of the same name.
Lock files are created readable by their owner only (0600), and the folders
made for them 0700: what the desk is doing is nobody else's business.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from fundarb.core.errors import FundarbError

ACQUIRE_TRIES = 5  # a holder() probe holds the lock for microseconds: do not take it for a runner
ACQUIRE_PAUSE_S = 0.02
READ_TRIES = 50  # a fresh holder writes its pid just after locking: wait that long for it
READ_PAUSE_S = 0.02
LOCK_FILE_MODE = 0o600
LOCK_FOLDER_MODE = 0o700


class RunnerBusy(FundarbError, RuntimeError):
    """The trade log's lock is held by another process (the message names its pid and the lock file)."""

    def __init__(self, message: str, pid: int, lock_path: Path) -> None:
        super().__init__(message)
        self.pid = pid
        self.lock_path = lock_path


def lock_path_of(journal_path: Path) -> Path:
    journal_path = Path(journal_path)
    return journal_path.with_name(journal_path.name + ".lock")


def lock_dir() -> Path:
    """Where the venue accounts' lock files live."""
    folder = os.environ.get("FUNDARB_LOCK_DIR")
    return Path(folder) if folder else Path.home() / ".local" / "state" / "fundarb" / "locks"


def make_folder(folder: Path) -> None:
    """``folder`` and any missing parent, each created 0700 (existing ones are left as they are)."""
    missing = []
    for p in (folder, *folder.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=LOCK_FOLDER_MODE)
        except FileExistsError:
            if not p.is_dir():
                raise


class RunnerLock:
    """An exclusive fcntl.flock on `<journal path>.lock` (or on ``path``, a
    venue account's lock file, described as ``what``); the file holds the
    holder's pid, start time and doing (rewritten on acquire). A killed
    process (even kill -9) releases it."""

    def __init__(self, journal_path: Path, path: Path | None = None, what: str = "", doing: str = "") -> None:
        self.journal_path = Path(journal_path)
        self.path = path or lock_path_of(self.journal_path)
        self.what = what or f"the trade log {self.journal_path}"
        self.doing = doing
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunnerLock:
        """Take the lock without waiting for it; RunnerBusy if another holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunnerLock is already held")
        make_folder(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
        try:
            for attempt in range(ACQUIRE_TRIES):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == ACQUIRE_TRIES - 1:
                        pid = _read_pid(fd)
                        doing = _read_doing(fd)
                        raise RunnerBusy(f"{self.what} is in use by process {pid if pid else '(pid unknown)'}"
                                         + (f" ({doing})" if doing else "") + f"; it holds {self.path}. Wait "
                                         "for it to end, or stop it (`fundarb kill` halts a runner)",
                                         pid, self.path) from None
                    time.sleep(ACQUIRE_PAUSE_S)
            started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            doing = f"{self.doing}, trade log {self.journal_path}" if self.doing else ""
            data = f"{os.getpid()}\n{started}\n{doing}\n".encode()
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


class ActorLock:
    """The one-actor lock of a command that can send orders, recover or
    reconcile: the trade log's lock and each venue account's, taken in a
    fixed order without waiting; all or none (RunnerBusy names the holder)."""

    def __init__(self, journal_path: Path, identities: Iterable[object] = (), doing: str = "") -> None:
        self.journal_path = Path(journal_path)
        seen: dict[str, RunnerLock] = {}
        for ident in identities:
            key = ident.key  # type: ignore[attr-defined]
            name = hashlib.sha256(key.encode()).hexdigest()[:24] + ".lock"
            what = f"the venue account {ident.describe()}"  # type: ignore[attr-defined]
            seen.setdefault(key, RunnerLock(journal_path, lock_dir() / name, what, doing))
        self.locks = [RunnerLock(journal_path, doing=doing)] + [seen[k] for k in sorted(seen)]

    @classmethod
    def of_config(cls, journal_path: Path, cfg: object, target: object, doing: str, venues: bool = True,
                  env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> ActorLock:
        """The lock of ``journal_path`` and (``venues``) of each account the
        config trades as ``target`` reaches it (not taken yet)."""
        from fundarb.live.identity import session_identities

        identities = session_identities(cfg, target.api_url, target.sandbox, env,  # type: ignore[attr-defined]
                                        dotenv).values() if venues else ()
        return cls(journal_path, identities, doing)

    @property
    def held(self) -> bool:
        return all(lock.held for lock in self.locks)

    def acquire(self) -> ActorLock:
        taken: list[RunnerLock] = []
        try:
            for lock in self.locks:
                taken.append(lock.acquire())
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return self

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()

    def __enter__(self) -> ActorLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def try_actor(lock: ActorLock) -> Iterator[bool]:
    """``lock`` for the block if nobody else holds it (yields True), else
    nothing (yields False): for a process that acts only now and then (the
    dashboard's reconciliation)."""
    try:
        lock.acquire()
    except RunnerBusy:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _read_doing(fd: int) -> str:
    lines = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
    return lines[2] if len(lines) > 2 else ""


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
