"""The shipped history's sha256 sums, checked when a shipped file is read.

``shipped/README.md`` lists every shipped data file with its sha256 in its
table (``| `name` | <64 hex digits> | ... |``). A file of that folder is
hashed the first time a process reads it and compared with its listed sum;
the verdict is kept for the process per (size, mtime_ns), so a backtest, a
sweep or a Monte Carlo study hashes each file once. A file that differs from
its listed sum, or that the README does not list, is refused: a backtest on
the shipped data must run on the data the README documents.

Folders passed with ``--data-dir`` are the user's own files and are not
checksummed (unless they are the shipped folder itself).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "shipped"
SUMS_FILE = "README.md"
# one row of the README's file table: | `name` | sha256 | ...
_ROW = re.compile(r"^\|\s*`([^`/\\]+)`\s*\|\s*([0-9a-fA-F]{64})\s*\|", re.MULTILINE)

# resolved path -> ((size, mtime_ns), problem or None): the verdict on that version of the file
_verdicts: dict[Path, tuple[tuple[int, int], str | None]] = {}
_sums: dict[Path, tuple[tuple[int, int], dict[str, str]]] = {}


def _version(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def listed_sums(folder: Path | None = None) -> dict[str, str]:
    """File name -> sha256 (lower case) as the folder's README lists them."""
    readme = (folder or SHIPPED_DIR) / SUMS_FILE
    if not readme.is_file():
        return {}
    key = readme.resolve()
    version = _version(readme)
    cached = _sums.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    sums = {name: digest.lower() for name, digest in _ROW.findall(readme.read_text(encoding="utf-8"))}
    _sums[key] = (version, sums)
    return sums


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_shipped(path: Path) -> bool:
    """Whether ``path`` is a file of the shipped folder (however it is named)."""
    try:
        return path.resolve().parent == SHIPPED_DIR.resolve()
    except OSError:
        return False


def shipped_problem(path: Path) -> str | None:
    """None when ``path`` is not a shipped file or matches its listed sum;
    else one line saying what is wrong (the caller raises it)."""
    if not is_shipped(path) or not path.is_file():
        return None
    key = path.resolve()
    version = _version(path)
    cached = _verdicts.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    expected = listed_sums(SHIPPED_DIR).get(path.name)
    problem: str | None
    if expected is None:
        problem = (f"shipped data file {path} has no sha256 listed in {SHIPPED_DIR / SUMS_FILE}: "
                   "the shipped data was changed or the README lost its checksum")
    else:
        actual = sha256_of(path)
        problem = None if actual == expected else (
            f"shipped data file {path} was changed: its sha256 {actual} is not the {expected} listed in "
            f"{SHIPPED_DIR / SUMS_FILE}; restore the shipped file (or pass your own data with --data-dir)")
    _verdicts[key] = (version, problem)
    return problem


def forget() -> None:
    """Drop the cached verdicts (a test that rewrites a file within one mtime tick)."""
    _verdicts.clear()
    _sums.clear()
