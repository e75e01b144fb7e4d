"""The runner lock: one trading process per trade log, released by the
kernel when its holder dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fundarb.live.runlock import RunnerBusy, RunnerLock

HOLD = """
import sys, time
from pathlib import Path
from fundarb.live.runlock import RunnerLock
lock = RunnerLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_in_child(journal: Path) -> subprocess.Popen:
    """Another process that takes the lock and keeps it until killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(journal)], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.strip() == "held", f"the child did not take the lock (exit {child.poll()})"
    return child


@pytest.fixture
def child_holding(tmp_path):
    journal = tmp_path / "trades.sqlite"
    child = hold_in_child(journal)
    yield journal, child
    if child.poll() is None:
        child.kill()
    child.wait(10)


def test_acquire_writes_pid_and_start_and_release_frees_it(tmp_path):
    journal = tmp_path / "state" / "trades.sqlite"  # the folder does not exist yet
    assert RunnerLock.holder(journal) is None
    assert not (tmp_path / "state").exists()  # probing creates nothing
    lock = RunnerLock(journal)
    assert lock.acquire() is lock and lock.held
    pid, started, doing = (tmp_path / "state" / "trades.sqlite.lock").read_text().splitlines()
    assert doing == ""  # a bare lock says nothing more
    assert int(pid) == os.getpid() and started.endswith("Z") and started[:2] == "20"
    assert RunnerLock.holder(journal) == os.getpid()
    lock.release()
    assert not lock.held and RunnerLock.holder(journal) is None
    with RunnerLock(journal) as again:  # acquirable again, by the context manager
        assert again.held and RunnerLock.holder(journal) == os.getpid()
    assert RunnerLock.holder(journal) is None


def test_a_second_lock_in_this_process_is_refused_too(tmp_path):
    journal = tmp_path / "trades.sqlite"
    with RunnerLock(journal):
        with pytest.raises(RunnerBusy) as busy:
            RunnerLock(journal).acquire()
        assert busy.value.pid == os.getpid()


def test_another_process_holding_it_refuses_ours_naming_its_pid_and_the_file(child_holding):
    journal, child = child_holding
    assert RunnerLock.holder(journal) == child.pid
    lock = RunnerLock(journal)
    with pytest.raises(RunnerBusy) as busy:
        lock.acquire()
    message = str(busy.value)
    assert str(child.pid) in message and str(journal) + ".lock" in message
    assert busy.value.pid == child.pid and not lock.held
    assert RunnerLock.holder(journal) == child.pid  # the probe and the refusal left the child's lock alone


def test_sigkill_of_the_holder_releases_the_lock(child_holding):
    journal, child = child_holding
    assert RunnerLock.holder(journal) == child.pid
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    # the kernel drops the lock with the dead process's files: nobody holds it,
    # though the file still names the dead process
    assert RunnerLock.holder(journal) is None
    assert (journal.parent / "trades.sqlite.lock").read_text().split()[0] == str(child.pid)
    with RunnerLock(journal) as lock:
        assert lock.held and RunnerLock.holder(journal) == os.getpid()


def test_a_child_refused_while_we_hold_it(tmp_path):
    journal = tmp_path / "trades.sqlite"
    probe = ("import sys; from pathlib import Path; from fundarb.live.runlock import RunnerLock, RunnerBusy\n"
             "try:\n    RunnerLock(Path(sys.argv[1])).acquire()\nexcept RunnerBusy as e:\n"
             "    print('busy', e.pid); sys.exit(3)\nprint('acquired')")
    with RunnerLock(journal):
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-c", probe, str(journal)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stdout + done.stderr
        assert done.stdout.split() == ["busy", str(os.getpid())]
        assert time.monotonic() - t0 < 30  # refused, not waited for
    done = subprocess.run([sys.executable, "-c", probe, str(journal)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "acquired"


# --- the one-actor lock: the trade log and each venue account ----------------------------

def _ident(host: str = "127.0.0.1:8765", key: str = "k1"):
    from fundarb.live.identity import VenueIdentity, key_digest

    return VenueIdentity("binanceusdm", "loopback", host, key_digest(key))


def test_two_trade_logs_on_one_venue_account_exclude_each_other(tmp_path):
    from fundarb.live.runlock import ActorLock

    with ActorLock(tmp_path / "a.sqlite", [_ident()], "fundarb trade open"):
        with pytest.raises(RunnerBusy) as busy:
            ActorLock(tmp_path / "b.sqlite", [_ident()], "fundarb reconcile").acquire()
        message = str(busy.value)
        assert "\n" not in message and _ident().describe() in message
        assert f"in use by process {os.getpid()} (fundarb trade open, trade log {tmp_path / 'a.sqlite'})" in message
        # all or none: the refused lock let go of b's trade log lock it took first
        assert RunnerLock.holder(tmp_path / "b.sqlite") is None
        # another account, or another host, is another lock
        with ActorLock(tmp_path / "c.sqlite", [_ident(key="other account")], "x"), \
                ActorLock(tmp_path / "d.sqlite", [_ident(host="127.0.0.1:9999")], "y"):
            pass
    with ActorLock(tmp_path / "b.sqlite", [_ident()], "fundarb reconcile") as lock:  # free again
        assert lock.held


def test_the_account_lock_dies_with_its_holder(tmp_path):
    from fundarb.live.runlock import ActorLock

    script = ("import sys, time\nfrom pathlib import Path\n"
              "from fundarb.live.identity import VenueIdentity\n"
              "from fundarb.live.runlock import ActorLock\n"
              f"ActorLock(Path(sys.argv[1]), [VenueIdentity.parse({_ident().key!r})], 'fundarb run --live').acquire()\n"
              "print('held', flush=True)\ntime.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "theirs.sqlite")], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunnerBusy, match=f"process {child.pid} \\(fundarb run --live"):
            ActorLock(tmp_path / "mine.sqlite", [_ident()], "fundarb trade close").acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        with ActorLock(tmp_path / "mine.sqlite", [_ident()], "fundarb trade close") as lock:
            assert lock.held
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)


def test_try_actor_takes_the_lock_for_its_block_only_when_nobody_holds_it(tmp_path):
    from fundarb.live.runlock import ActorLock, try_actor

    with try_actor(ActorLock(tmp_path / "dash.sqlite", [_ident()], "fundarb monitor")) as alone:
        assert alone and RunnerLock.holder(tmp_path / "dash.sqlite") == os.getpid()
    assert RunnerLock.holder(tmp_path / "dash.sqlite") is None  # released after the block
    with ActorLock(tmp_path / "trade.sqlite", [_ident()], "fundarb trade open"):
        with try_actor(ActorLock(tmp_path / "dash.sqlite", [_ident()], "fundarb monitor")) as alone:
            assert not alone
            assert RunnerLock.holder(tmp_path / "dash.sqlite") is None  # took nothing
