"""The CLI's one error boundary (`fundarb.cli.main.main`): an error meant for the
user is one line and exit 2, a failed read or write names its path, an
unexpected exception is an internal error whose traceback goes to a file,
and typer's own usage errors, help and exit codes are as they were. Also
the golden file of a replay: missing, empty or unreadable is one line."""

from __future__ import annotations

import importlib
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

import fundarb.sim.backtest
from fundarb.cli import main as cli
from fundarb.core.errors import FundarbError

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "baseline.toml"
BITMEX = ROOT / "recordings" / "bitmex_xbtusd_2021-07-22"

# every error class meant for the user in these modules derives from FundarbError
USER_ERRORS = [
    ("fundarb.output.report", "OutputError"), ("fundarb.replay.parse", "ReplayError"),
    ("fundarb.research.cluster", "ClusterError"), ("fundarb.research.study", "StudyError"),
    ("fundarb.research.sweep", "GridError"), ("fundarb.research.funding_stats", "StatsError"),
    ("fundarb.replay.record", "RecordError"), ("fundarb.data.margin_tiers", "MarginTableError"),
]


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fundarb", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    out, err = capsys.readouterr()
    code = stop.value.code
    return (0 if code is None else code), out, err


def backtest_raising(monkeypatch, exc: BaseException) -> None:
    def run_backtest(*a, **k):
        raise exc

    monkeypatch.setattr(fundarb.sim.backtest, "run_backtest", run_backtest)


BACKTEST = ("backtest", str(BASELINE), "--from", "2024-01-01", "--to", "2024-01-04", "-q")


@pytest.mark.parametrize("module, name", USER_ERRORS)
def test_user_errors_share_one_root_and_keep_their_second_base(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, FundarbError) and issubclass(cls, ValueError)


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    backtest_raising(monkeypatch, FundarbError("the window holds no\nfunding settlement"))
    code, out, err = run_main(monkeypatch, capsys, *BACKTEST, "--out", str(tmp_path / "o"))
    assert code == 2 and out == ""
    assert err == "error: the window holds no funding settlement\n"


def test_an_os_error_names_its_path(monkeypatch, capsys, tmp_path):
    backtest_raising(monkeypatch, PermissionError(13, "Permission denied", "/srv/data/prices_1h.parquet"))
    code, _, err = run_main(monkeypatch, capsys, *BACKTEST, "--out", str(tmp_path / "o"))
    assert code == 2 and err == "error: /srv/data/prices_1h.parquet: Permission denied\n"


def test_a_sqlite_error_is_one_line(monkeypatch, capsys, tmp_path):
    backtest_raising(monkeypatch, sqlite3.OperationalError("database is locked"))
    code, _, err = run_main(monkeypatch, capsys, *BACKTEST, "--out", str(tmp_path / "o"))
    assert code == 2 and err == "error: SQLite: database is locked\n"


def test_an_unexpected_exception_is_an_internal_error_with_its_traceback_in_a_file(monkeypatch, capsys, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    backtest_raising(monkeypatch, KeyError("spot"))
    code, out, err = run_main(monkeypatch, capsys, *BACKTEST, "--out", str(tmp_path / "o"))
    assert code == 1 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert err.startswith("error: internal error (KeyError): 'spot'; the traceback is in ")
    saved = Path(err.strip().rsplit(" ", 1)[1])
    assert saved.parent == tmp_path and saved.name.startswith("fundarb-internal-error-")
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'spot'" in text and "run_backtest" in text


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys, tmp_path):
    backtest_raising(monkeypatch, KeyboardInterrupt())
    code, _, err = run_main(monkeypatch, capsys, *BACKTEST, "--out", str(tmp_path / "o"))
    assert code == 130 and "Traceback" not in err


def test_commands_that_fail_themselves_keep_their_exit_code(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "backtest", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("error: ") and "config file not found" in err


@pytest.mark.parametrize("args, code, needle", [
    (("backtest", "--seed", "abc"), 2, "Invalid value for '--seed'"),
    (("nosuch",), 2, "No such command 'nosuch'"),
    (("--help",), 0, "Usage: "),
    ((), 2, "Usage: "),
])
def test_typer_usage_errors_help_and_exit_codes_are_unchanged(monkeypatch, capsys, args, code, needle):
    got, out, err = run_main(monkeypatch, capsys, *args)
    assert got == code and needle in out + err and "internal error" not in err


def test_main_ignores_sigxfsz(monkeypatch, capsys):
    """Past RLIMIT_FSIZE a write fails with EFBIG, named with its path,
    instead of the signal killing the process."""
    monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append((sig, handler)))
    calls: list = []
    run_main(monkeypatch, capsys, "--help")
    assert (signal.SIGXFSZ, signal.SIG_IGN) in calls


# --- the golden file of a replay -------------------------------------------------------

@pytest.fixture
def recording(tmp_path) -> Path:
    folder = tmp_path / "rec"
    shutil.copytree(BITMEX, folder)
    return folder


@pytest.mark.parametrize("damage, says", [
    (lambda g: g.unlink(), "no golden file {g}: replay with --update-golden to write it from this replay"),
    (lambda g: g.write_text(""), "golden file {g} is empty: replay with --update-golden to write it from this replay"),
    (lambda g: g.write_text("  \n"), "golden file {g} is empty: replay with --update-golden"),
    (lambda g: g.write_bytes(b'{"metrics": "\xff\xfe"}\n'), "golden file {g} is not UTF-8 text (byte 13): restore it, or replay with --update-golden"),
    (lambda g: g.write_text('{"metrics": {"orders": 0,}}\n'), "golden file {g} is not valid JSON (line 1, column 26: "),
], ids=["missing", "empty", "blank", "not-utf8", "not-json"])
def test_a_golden_file_that_cannot_be_compared_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, recording, damage, says):
    golden = recording / "golden.json"
    damage(golden)
    code, out, err = run_main(monkeypatch, capsys, "replay", str(recording), "--out", str(tmp_path / "o"), "-q")
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: " + says.format(g=golden)), err
    assert not (tmp_path / "o").exists()


def test_update_golden_writes_a_missing_golden_file(monkeypatch, capsys, tmp_path, recording):
    golden = recording / "golden.json"
    golden.unlink()
    code, out, _ = run_main(monkeypatch, capsys, "replay", str(recording), "--update-golden", "--out", str(tmp_path / "o"),
                            "--cache-dir", str(tmp_path / "cache"), "-q")
    assert code == 0 and "rewritten" in out
    assert golden.read_text() == (BITMEX / "golden.json").read_text()
