"""Outputs that cannot be written: a read-only or permission-denied --out, a
file-size limit and a full disk each give one line naming the path and the
cause, exit 2, no traceback, and the previous outputs stay as they were.

Each case runs `fundarb` in a child process, as a user does. Running as root,
a folder's mode does not stop writes; the child then gives up root's
capabilities (its bounding set) before it starts, so the mode binds as it
would for any user. The full disk is a small tmpfs mounted in a user
namespace where the kernel allows one without root; elsewhere the file-size
limit (RLIMIT_FSIZE) stands in for it."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
SHORT = ["backtest", str(BASELINE), "--from", "2024-01-01", "--to", "2024-01-04", "-q"]
LONG = ["backtest", str(BASELINE), "--from", "2021-08-01", "--to", "2021-11-01", "-q"]
MAIN = "from fundarb.cli.main import main; main()"
PR_CAPBSET_DROP = 24


def fundarb(args: list[str], preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, preexec_fn=preexec)


def without_root_powers() -> None:
    """In the child before exec: as root, drop every capability from the
    bounding set, so the program runs as uid 0 that file modes apply to."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def file_size_limit(limit: int):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def previous_run(out: Path, args: list[str] = SHORT) -> dict[str, bytes]:
    res = fundarb([*args, "--out", str(out)])
    assert res.returncode == 0, res.stderr
    before = outputs(out)
    assert sorted(before) == ["backtest.png", "report.json", "trades.sqlite"]
    return before


def assert_one_line(res: subprocess.CompletedProcess, path: Path, cause: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0] == f"error: cannot write {path}: {cause}", lines[0]


def assert_untouched(out: Path, before: dict[str, bytes]) -> None:
    assert outputs(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "temporary folders left behind"


def test_read_only_output_folder(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    out = parent / "o"
    before = previous_run(out)
    parent.chmod(0o500)
    try:
        res = fundarb([*SHORT, "--out", str(out)], preexec=without_root_powers)
    finally:
        parent.chmod(0o700)
    assert_one_line(res, out, "Permission denied")
    assert_untouched(out, before)


def test_permission_denied_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "o"
    before = previous_run(out)
    locked.chmod(0)
    try:
        res = fundarb([*SHORT, "--out", str(out)], preexec=without_root_powers)
    finally:
        locked.chmod(0o700)
    assert_one_line(res, out, "Permission denied")
    assert_untouched(out, before)


@pytest.mark.parametrize("victim", ["report.json", "backtest.png", "trades.sqlite"])
def test_file_size_limit_names_the_file_it_stopped(tmp_path, victim):
    """SIGXFSZ is ignored, so passing RLIMIT_FSIZE is an EFBIG error on the
    file being written: the limit is set just under that file's size (and
    above the ones written before it)."""
    out = tmp_path / "o"
    before = previous_run(out, LONG)
    sizes = {name: len(data) for name, data in before.items()}
    order = ["report.json", "backtest.png", "trades.sqlite"]
    written_before = [sizes[n] for n in order[: order.index(victim)]]
    limit = max([1024, *(s + 1 for s in written_before)])
    assert limit < sizes[victim] - 4096
    res = fundarb([*LONG, "--out", str(out)], preexec=file_size_limit(limit))
    cause = "disk I/O error" if victim == "trades.sqlite" else "File too large"  # SQLite reports it in its own words
    assert_one_line(res, out / victim, cause)
    assert_untouched(out, before)


def test_file_size_limit_on_a_replay(tmp_path):
    out, cache = tmp_path / "runs" / "o", tmp_path / "cache"
    args = ["replay", "bitmex_xbtusd_2021-07-22", "--cache-dir", str(cache), "-q"]
    before = previous_run(out, args)  # fills the parse cache too
    res = fundarb([*args, "--out", str(out)], preexec=file_size_limit(len(before["report.json"]) + 1))
    assert_one_line(res, out / "backtest.png", "File too large")
    assert_untouched(out, before)


FULL_DISK_SCRIPT = r'''
import hashlib, json, os, subprocess, sys
mnt, result, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def run(extra):
    p = subprocess.run([sys.executable, "-c", "from fundarb.cli.main import main; main()", *args, *extra],
                       capture_output=True, text=True)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
def digest(folder):
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest() for n in sorted(os.listdir(folder))}
out = os.path.join(mnt, "o")
first = run(["--out", out])
before = digest(out) if first["rc"] == 0 else {}
with open(os.path.join(mnt, "filler"), "wb", buffering=0) as fh:  # fill the disk to the last block
    try:
        while True:
            fh.write(b"\0" * 4096)
    except OSError:
        pass
full = run(["--out", out])
after_full = digest(out)
os.remove(os.path.join(mnt, "filler"))
subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
read_only = run(["--out", out])
json.dump({"first": first, "before": before, "full": full, "after_full": after_full, "read_only": read_only,
           "after_read_only": digest(out), "left": sorted(os.listdir(mnt))}, open(result, "w"))
'''


def tmpfs_without_root(probe: Path) -> bool:
    """Whether a user namespace can mount a tmpfs here (no root needed)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe.mkdir()
    try:
        res = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
                              'mount -t tmpfs -o size=64k tmpfs "$0"', str(probe)], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def test_full_disk(tmp_path):
    mnt = tmp_path / "disk"
    if tmpfs_without_root(tmp_path / "probe"):
        mnt.mkdir()
        script, result = tmp_path / "full_disk.py", tmp_path / "result.json"
        script.write_text(FULL_DISK_SCRIPT)
        subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        'mount -t tmpfs -o size=2m tmpfs "$0" && cd "$1" && exec "$2" "$3" "$0" "$4" "$5"',
                        str(mnt), str(ROOT), sys.executable, str(script), str(result), json.dumps(SHORT)],
                       check=True, timeout=600)
        r = json.loads(result.read_text())
        assert r["first"]["rc"] == 0, r["first"]["stderr"]
        out = mnt / "o"
        # the disk fills while report.json, the first output, is written
        assert r["full"]["rc"] == 2 and r["full"]["stderr"] == f"error: cannot write {out / 'report.json'}: No space left on device\n"
        assert r["after_full"] == r["before"]
        assert r["read_only"]["rc"] == 2 and r["read_only"]["stderr"] == f"error: cannot write {out}: Read-only file system\n"
        assert r["after_read_only"] == r["before"]
        assert r["left"] == ["o"]
    else:
        # no mountable tmpfs without root here: a file-size limit stands in for the full disk
        out = mnt / "o"
        before = previous_run(out)
        res = fundarb([*SHORT, "--out", str(out)], preexec=file_size_limit(1024))
        assert_one_line(res, out / "report.json", "File too large")
        assert_untouched(out, before)


def test_no_output_error_reaches_the_terminal_as_a_traceback(tmp_path):
    """The golden file of a replay is an output too under --update-golden."""
    folder = tmp_path / "rec"
    shutil.copytree(ROOT / "recordings" / "bitmex_xbtusd_2021-07-22", folder)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        res = fundarb(["replay", str(folder), "--update-golden", "--out", str(tmp_path / "o"),
                       "--cache-dir", str(tmp_path / "cache"), "-q"], preexec=without_root_powers)
    finally:
        folder.chmod(0o755)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr == f"error: cannot write {folder / 'golden.json'}: Permission denied\n"
