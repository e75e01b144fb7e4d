"""Reading a parquet file fundarb did not write or verify, without letting a
damaged one take the process down.

polars' reader trusts the lengths a file's footer and pages declare: a
damaged byte there can make it panic (a ``PanicException``, which is not an
``Exception``) or ask for an allocation no machine has and abort the whole
process, after which no error line can be printed and nothing can be
cleaned up. So a file that is not vouched for (the shipped data is, by its
checksums) is read first by a child process under a memory and time bound;
only a file the child read whole is read here. The cost is one short-lived
process per file (a fraction of a second).

A file fundarb writes itself (a fetch store, the replay cache) is sealed as
it is written (``write_sealed``): the sha256 of its bytes beside it, in
``<file>.sha256``. A file whose bytes still match its seal is read directly.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import polars as pl

PROBE_MEMORY_BYTES = 4 * 2**30  # far above what a readable history file of years needs
PROBE_SECONDS = 120.0
_PROBE = "import sys, polars as pl; pl.read_parquet(sys.argv[1])"


class ParquetUnreadable(ValueError):
    """The file cannot be read as parquet; the message says why, in one line."""


def read_parquet(path: Path, vouched: bool = False) -> pl.DataFrame:
    """``path`` as a DataFrame, or ``ParquetUnreadable``. ``vouched``: a file
    known to be whole (a checksummed shipped file) is read directly."""
    if not vouched and not _sealed(path):
        _probe(path)
    try:
        return pl.read_parquet(path)
    except BaseException as exc:  # polars' panics are BaseExceptions; Ctrl-C and exits pass through
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        text = " ".join(str(exc).split())
        raise ParquetUnreadable(text[:200] or type(exc).__name__) from None


SEAL = ".sha256"


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + SEAL)


def _sealed(path: Path) -> bool:
    try:
        expected = _seal_path(path).read_text().strip()
        return hashlib.sha256(path.read_bytes()).hexdigest() == expected
    except (OSError, UnicodeDecodeError):
        return False


def write_sealed(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` atomically, with its seal (the seal first:
    a seal that does not match its file only costs a probe)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        frame.write_parquet(tmp)
        seal_tmp = tmp.with_name(tmp.name + SEAL)
        seal_tmp.write_text(hashlib.sha256(tmp.read_bytes()).hexdigest() + "\n")
        os.replace(seal_tmp, _seal_path(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + SEAL).unlink(missing_ok=True)


def _probe(path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = min(x for x in (PROBE_MEMORY_BYTES, soft, hard) if x != resource.RLIM_INFINITY)

    def bounded() -> None:  # never above a bound this process already runs under
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=PROBE_SECONDS, preexec_fn=bounded)
    except subprocess.TimeoutExpired:
        raise ParquetUnreadable(f"reading it took over {PROBE_SECONDS:g} s (a damaged file?)") from None
    if done.returncode != 0:
        lines = [x.strip() for x in done.stderr.splitlines() if x.strip()]
        last = lines[-1] if lines else f"the reader ended with code {done.returncode}"
        if done.returncode < 0 or "memory allocation" in done.stderr:
            last = "the reader crashed on it (a damaged file?)"
        elif "PanicException" in last:
            last = "the reader failed on it (a damaged file?): " + last.split("PanicException:", 1)[-1]
        raise ParquetUnreadable(" ".join(last.split())[:200])
