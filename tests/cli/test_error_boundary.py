"""The CLI's one error boundary (`fundarb.cli.main.main`): an error meant for the
user is one line and exit 2, a failed read or write names its path, an
unexpected exception is an internal error whose traceback goes to a file,
and typer's own usage errors, help and exit codes are as they were. A
FundarbError is turned into its line by the app's command group, so typer's
CliRunner sees the same, and no command keeps its own list of user errors.
Also the golden file of a replay: missing, empty or unreadable is one line."""

from __future__ import annotations

import ast
import builtins
import importlib
import shutil
import signal
import sqlite3
import sys
import types
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import fundarb.sim.backtest
from fundarb.cli import main as cli
from fundarb.core.errors import FundarbError

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
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


# --- one conversion of a user error: the command group ----------------------------------

CLI_DIR = ROOT / "src" / "fundarb" / "cli"

# what the commands' own handlers used to list, and now leave to the group
LEFT_TO_THE_GROUP = [
    ("fundarb.config", "ConfigError"), ("fundarb.data.history", "DataError"), ("fundarb.data.fetch", "FetchError"),
    ("fundarb.core.funding", "MissingFundingSettlement"), ("fundarb.output.report", "OutputError"),
    ("fundarb.research.study", "StudyError"), ("fundarb.research.cluster", "ClusterError"),
    ("fundarb.research.sweep", "GridError"), ("fundarb.research.funding_stats", "StatsError"),
    ("fundarb.replay.parse", "ReplayError"), ("fundarb.app.promote", "PromotionError"),
    ("fundarb.app.runner.loop", "RunnerError"), ("fundarb.live.ccxt.client", "VenueSetupError"),
    ("fundarb.live.ccxt.credentials", "CredentialsError"), ("fundarb.live.journal", "JournalError"),
    ("fundarb.live.runlock", "RunnerBusy"), ("fundarb.core.liquidation", "LiquidationRuleMissing"),
    ("fundarb.core.liquidation", "NotionalBeyondTiers"),
]


@pytest.mark.parametrize("module, name", LEFT_TO_THE_GROUP)
def test_the_errors_left_to_the_group_are_user_errors(module, name):
    assert issubclass(getattr(importlib.import_module(module), name), FundarbError)


def _bindings(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """What each import statement of a file binds, wherever it stands (commands
    import lazily, inside their bodies): name -> (module, attribute or None)."""
    bound: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                bound[a.asname or a.name] = (node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                bound[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], None)
    return bound


def _resolve(expr: ast.expr, module: types.ModuleType, bound: dict) -> object:
    if isinstance(expr, ast.Attribute):
        return getattr(_resolve(expr.value, module, bound), expr.attr)
    assert isinstance(expr, ast.Name), f"{module.__name__}: cannot resolve {ast.unparse(expr)}"
    if expr.id in vars(module):
        return vars(module)[expr.id]
    if expr.id in bound:
        source, attr = bound[expr.id]
        found = importlib.import_module(source)
        if attr is None:
            return found
        try:
            return getattr(found, attr)
        except AttributeError:  # a submodule not imported yet
            return importlib.import_module(f"{source}.{attr}")
    assert hasattr(builtins, expr.id), f"{module.__name__}: cannot resolve {expr.id}"
    return getattr(builtins, expr.id)


def user_error_tuples(path: Path, module: types.ModuleType) -> list[str]:
    """Every ``except (...)`` in ``path`` that names two or more FundarbError
    subclasses, as ``file:line: except (...)``."""
    tree = ast.parse(path.read_text(), str(path))
    bound = _bindings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Tuple):
            classes = [_resolve(e, module, bound) for e in node.type.elts]
            if sum(isinstance(c, type) and issubclass(c, FundarbError) for c in classes) >= 2:
                found.append(f"{path.name}:{node.lineno}: except {ast.unparse(node.type)}")
    return found


def test_the_tuple_check_sees_a_list_of_user_errors_however_imported(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n"
        "    from fundarb.config import ConfigError\n"
        "    from fundarb.data import history\n"
        "    try:\n"
        "        pass\n"
        "    except (ConfigError, history.DataError, OSError):\n"
        "        pass\n"
        "    except (OSError, ValueError, ConfigError):\n"
        "        pass\n")
    assert user_error_tuples(probe, types.ModuleType("probe")) == [
        "probe.py:6: except (ConfigError, history.DataError, OSError)"]


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_command_lists_user_errors_the_group_turns_into_one_line(path):
    name = "fundarb.cli" if path.stem == "__init__" else f"fundarb.cli.{path.stem}"
    assert user_error_tuples(path, importlib.import_module(name)) == []


def _groups(command, trail: str = "fundarb"):
    yield trail, command
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):
            yield from _groups(sub, f"{trail} {name}")


def test_the_app_and_every_group_mounted_in_it_turn_user_errors_into_one_line():
    from fundarb.cli.common import UserErrorGroup

    groups = dict(_groups(typer.main.get_command(cli.app)))
    assert {"fundarb", "fundarb data", "fundarb trade"} <= set(groups)
    assert all(isinstance(g, UserErrorGroup) for g in groups.values()), groups


FETCH = ["fetch", "--venue", "binanceusdm", "--symbol", "BTC/USDT:USDT", "--since", "2024-01-01",
         "--until", "2024-01-02", "--no-spot", "-q"]


@pytest.mark.parametrize("via", ["CliRunner, fundarb app", "CliRunner, data app alone", "main"])
def test_a_user_error_in_a_sub_app_command_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, via):
    import fundarb.data.fetch
    from fundarb.cli.data import data_app

    def fetch_all(*a, **k):
        raise FundarbError("the venue's pages\nend early")

    monkeypatch.setattr(fundarb.data.fetch, "fetch_all", fetch_all)
    args = [*FETCH, "--store", str(tmp_path / "store")]
    if via == "main":
        code, out, err = run_main(monkeypatch, capsys, "data", *args)
    else:
        res = CliRunner().invoke(cli.app, ["data", *args]) if "fundarb" in via else CliRunner().invoke(data_app, args)
        code, out, err = res.exit_code, res.stdout, res.stderr
    assert code == 2 and out == "", err
    assert err == "error: the venue's pages end early\n"


def test_a_user_error_in_a_trade_command_is_one_line_and_exit_2_through_clirunner(tmp_path):
    journal = tmp_path / "t.sqlite"
    journal.touch()
    res = CliRunner().invoke(cli.app, ["trade", "log", "--journal", str(journal), "--since", "last tuesday"])
    assert res.exit_code == 2 and res.stdout == "", res.output
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("error: ") and "last tuesday" in res.stderr
