"""A new SQLite file made whole or not at all (the trade log, the promotion
store): its schema and first rows are written to a private file (0600)
beside it, synced, and linked in under its name. No reader ever sees a
half-made file, and of two processes creating it at once one wins and the
other opens that one (the link never replaces a file)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path


def create_whole(path: Path, schema: str, meta: Iterable[tuple[str, str]]) -> None:
    """Create ``path`` with the ``;``-separated ``schema`` and ``meta``'s
    (key, value) rows in its ``meta`` table, unless a file is there already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)  # mode 0600
    os.close(fd)
    tmp = Path(name)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")  # one file: nothing beside it to lose on the link
            db.execute("BEGIN IMMEDIATE")
            for stmt in filter(str.strip, schema.split(";")):
                db.execute(stmt)
            db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta))
            db.execute("COMMIT")
        finally:
            db.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: that one is the file
    finally:
        for p in (tmp, Path(f"{tmp}-journal")):
            p.unlink(missing_ok=True)
