"""The strategy runners running on this machine, found through their locks.

A runner (``fundarb run --paper|--live``) holds, for its whole life, a lock
file in ``<lock folder>/runners/`` (the lock folder of
``fundarb.live.runlock``) named after its trade log, whose text says
its pid, mode and trade log. ``running()`` lists the runners whose lock is
held now: the kernel drops the lock when the process ends in any way, so a
runner that died is never listed. The stop commands (``kill``, ``resume``)
and the read commands (``trade log``, ``positions``, ``monitor``) use it to
act on the runner that is running when the user names no trade log, and
never guess between two.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import attrs

from fundarb.live.runlock import RunnerLock, lock_dir

MARK = "fundarb run --"


@attrs.frozen
class Running:
    pid: int
    mode: str  # paper | live
    journal: Path

    def describe(self) -> str:
        return f"the {self.mode} runner (pid {self.pid}) on the trade log {self.journal}"


def runners_dir() -> Path:
    return lock_dir() / "runners"


def registration(journal: Path, mode: str) -> RunnerLock:
    """The lock a runner on ``journal`` holds while it runs (not taken yet)."""
    path = Path(os.path.abspath(journal))
    name = hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".lock"
    return RunnerLock(path, runners_dir() / name, f"the runner registration of {path}", f"{MARK}{mode}")


def running() -> list[Running]:
    """The runners whose registration lock is held now, by trade log."""
    out = []
    folder = runners_dir()
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a runner is running
                found = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
                if found is not None:
                    out.append(found)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return out


def _parse(text: str) -> Running | None:
    lines = text.splitlines()
    if len(lines) < 3 or not lines[0].strip().isdigit() or not lines[2].startswith(MARK):
        return None
    doing, _, journal = lines[2].partition(", trade log ")
    return Running(int(lines[0]), doing[len(MARK):], Path(journal)) if journal else None
