"""Malformed inputs through the CLI as a user runs it (``fundarb.cli.main.main``):
configs, history files, recorded captures and trade logs, each damaged by
hypothesis in the ways real files go wrong (a field of another type or out of
range, inf/NaN, a value x1000, a duplicated row, a dropped or retyped column,
a cut or flipped byte, an empty file, nesting thousands deep).

Every case must end in success (exit 0), in exactly one ``error:`` line on
stderr with exit 2, or (a replay) in the golden file's verdict that the
replay differs, exit 1, with no traceback, within ``CASE_SECONDS``, and a failed
case must leave the outputs it would have written (and an input it would have
changed) byte for byte as they were. Run as a script in its own process,
whose memory the caller bounds (``RLIMIT_AS``); it prints one JSON summary.
All the market data in here is the shipped real history cut short; the
damage done to it is synthetic.

    python fuzz_driver.py KIND EXAMPLES WORKDIR      # KIND: config | history | capture | trade_log
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import tomllib
from pathlib import Path

import polars as pl
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
CASE_SECONDS = 60
WINDOW = ("2024-03-01", "2024-03-08")  # a week of the shipped history: every case runs quickly


class Hang(BaseException):
    """A case that ran past CASE_SECONDS (not an Exception: nothing catches it on the way)."""


def _alarm(*_: object) -> None:
    raise Hang()


def invoke(args: list[str]) -> tuple[int, str, str]:
    """``fundarb ARGS`` in this process: (exit code, stdout, stderr)."""
    from fundarb.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fundarb", *args]
    code = 0
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        signal.alarm(0)
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its sha256 (what "untouched" compares)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Tally:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.counts = {"tried": 0, "success": 0, "one_line_error": 0, "golden_differs": 0, "traceback": 0,
                       "internal_error": 0,
                       "hang": 0, "not_one_line": 0, "outputs_touched": 0, "wrong_exit": 0}
        self.failures: list[dict] = []

    def check(self, what: str, args: list[str], watched: list[Path]) -> None:
        before = {str(w): tree(w) if w.is_dir() else _digest(w) for w in watched}
        self.counts["tried"] += 1
        try:
            code, out, err = invoke(args)
        except Hang:
            self._fail("hang", what, args, "")
            return
        if "Traceback" in err or "Traceback" in out:
            self._fail("traceback", what, args, err)
        elif code == 0:
            self.counts["success"] += 1
        elif code == 1 and "golden" in out and "differs" in out and not err.strip():
            self.counts["golden_differs"] += 1  # a damaged capture the regression check caught: said, exit 1
        elif code == 1 and "internal error" in err:
            self._fail("internal_error", what, args, err)
        elif code != 2:
            self._fail("wrong_exit", what, args, f"exit {code}: {err}")
        else:
            lines = [x for x in err.splitlines() if x.strip()]
            if len(lines) != 1 or not lines[0].startswith("error:"):
                self._fail("not_one_line", what, args, err)
            else:
                self.counts["one_line_error"] += 1
            after = {str(w): tree(w) if w.is_dir() else _digest(w) for w in watched}
            if after != before:
                self._fail("outputs_touched", what, args, err)

    def _fail(self, key: str, what: str, args: list[str], err: str) -> None:
        self.counts[key] += 1
        if len(self.failures) < 20:
            self.failures.append({"failure": key, "case": what, "args": args, "stderr": err[-1500:]})


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _sentinel(out: Path) -> None:
    """Outputs of an earlier run that a failed case must leave as they are."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "backtest.png", "trades.sqlite"):
        (out / name).write_bytes(f"earlier {name}\n".encode())


# --- damage -----------------------------------------------------------------------------------

def toml_values() -> st.SearchStrategy:
    scalar = st.one_of(st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=12), st.sampled_from([0, -1, 1, 1000, 16, 6, 1e300, -1e-300, 2**63]))
    return st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text("abc", min_size=1, max_size=3),
                                                                             scalar, max_size=2))


def leaves(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.extend(leaves(v, prefix + (k,)) if isinstance(v, dict) else [prefix + (k,)])
    return out


def flip(data: bytes, at: int, xor: int) -> bytes:
    raw = bytearray(data)
    if raw:
        raw[at % len(raw)] ^= xor
    return bytes(raw)


# --- the four kinds ---------------------------------------------------------------------------

def run_config(n: int, work: Path) -> Tally:
    tally = Tally("config")
    base = tomllib.loads((ROOT / "sims" / "spot_perp.toml").read_text())
    paths = leaves(base)

    @settings(max_examples=n, deadline=None, database=None, derandomize=CI, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["field", "field", "field", "bytes", "nested", "empty"]), label="how")
        cfg = work / "case.toml"
        if how == "field":
            raw = json.loads(json.dumps(base))
            path = data.draw(st.sampled_from(paths), label="field")
            node = raw
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = data.draw(toml_values(), label="value")
            try:
                text = tomli_w.dumps(raw)
            except (TypeError, ValueError):
                return
            what = f"{'.'.join(path)} = {node[path[-1]]!r}"[:200]
            cfg.write_text(text)
        elif how == "bytes":
            clean = (ROOT / "sims" / "spot_perp.toml").read_bytes()
            at, xor = data.draw(st.integers(0, len(clean) - 1)), data.draw(st.integers(1, 255))
            cfg.write_bytes(flip(clean, at, xor))
            what = f"byte {at} ^ {xor}"
        elif how == "nested":
            depth = data.draw(st.sampled_from([50, 1000, 3000, 100_000]), label="depth")
            cfg.write_text((ROOT / "sims" / "spot_perp.toml").read_text().replace(
                "[data]", f"x = {'[' * depth}{']' * depth}\n[data]", 1))
            what = f"nested {depth} deep"
        else:
            cfg.write_bytes(b"")
            what = "empty file"
        out = work / "out"
        _sentinel(out)
        tally.check(what, ["backtest", str(cfg), "--from", WINDOW[0], "--to", WINDOW[1], "--out", str(out), "-q"],
                    [out])

    case()
    return tally


def _history_window(folder: Path) -> None:
    from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR

    lo, hi = pl.lit(WINDOW[0]).str.to_datetime(time_zone="UTC"), pl.lit("2024-03-09").str.to_datetime(time_zone="UTC")
    folder.mkdir(parents=True, exist_ok=True)
    pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(pl.col("open_time").is_between(lo, hi)).write_parquet(
        folder / PRICES_FILE)
    pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(pl.col("funding_time").is_between(lo, hi)).write_parquet(
        folder / FUNDING_FILE)


def run_history(n: int, work: Path) -> Tally:
    from fundarb.data.history import FUNDING_FILE, PRICES_FILE

    tally = Tally("history")
    clean = work / "clean"
    _history_window(clean)
    frames = {f: pl.read_parquet(clean / f) for f in (PRICES_FILE, FUNDING_FILE)}

    @settings(max_examples=n, deadline=None, database=None, derandomize=CI, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data: st.DataObject) -> None:
        folder = work / "hist"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(clean, folder)
        name = data.draw(st.sampled_from([PRICES_FILE, FUNDING_FILE]), label="file")
        frame = frames[name]
        how = data.draw(st.sampled_from(["value", "value", "value", "duplicate", "drop", "retype", "bytes", "cut",
                                         "empty"]), label="how")
        numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
        row = data.draw(st.integers(0, frame.height - 1), label="row")
        if how == "value":
            col = data.draw(st.sampled_from(numeric), label="column")
            kind = data.draw(st.sampled_from(["inf", "-inf", "nan", "x1000", "x100", "neg", "zero", "huge"]))
            old = frame[col][row]
            new = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan"), "huge": 1e300,
                   "zero": 0}.get(kind, None)
            if new is None:
                new = (old or 1) * {"x1000": 1000, "x100": 100, "neg": -1}[kind]
            values = frame[col].cast(pl.Float64).to_list()
            values[row] = new
            out_frame = frame.with_columns(pl.Series(col, values).cast(frame.schema[col], strict=False))
            what = f"{name} row {row} {col} {kind}"
            out_frame.write_parquet(folder / name)
        elif how == "duplicate":
            pl.concat([frame, frame[row]]).write_parquet(folder / name)
            what = f"{name} row {row} twice"
        elif how == "drop":
            col = data.draw(st.sampled_from(frame.columns), label="column")
            frame.drop(col).write_parquet(folder / name)
            what = f"{name} without {col}"
        elif how == "retype":
            col = data.draw(st.sampled_from(numeric), label="column")
            frame.with_columns(pl.col(col).cast(pl.String)).write_parquet(folder / name)
            what = f"{name} {col} as text"
        elif how == "bytes":
            raw = (clean / name).read_bytes()
            at, xor = data.draw(st.integers(0, len(raw) - 1)), data.draw(st.integers(1, 255))
            (folder / name).write_bytes(flip(raw, at, xor))
            what = f"{name} byte {at} ^ {xor}"
        elif how == "cut":
            raw = (clean / name).read_bytes()
            at = data.draw(st.integers(0, len(raw) - 1))
            (folder / name).write_bytes(raw[:at])
            what = f"{name} cut at {at}"
        else:
            (folder / name).write_bytes(b"")
            what = f"{name} empty"
        out = work / "out"
        _sentinel(out)
        tally.check(what, ["backtest", "--data-dir", str(folder), "--from", WINDOW[0], "--to", WINDOW[1],
                           "--out", str(out), "-q"], [out])

    case()
    return tally


def run_capture(n: int, work: Path) -> Tally:
    tally = Tally("capture")
    source = ROOT / "recordings" / "bitmex_xbtusd_2021-07-22"
    files = ["BITMEX.0", "BITMEX.ws.1.0", "golden.json", "recording.toml"]

    @settings(max_examples=n, deadline=None, database=None, derandomize=CI, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data: st.DataObject) -> None:
        rec = work / "rec" / source.name
        shutil.rmtree(rec.parent, ignore_errors=True)
        shutil.copytree(source, rec)
        name = data.draw(st.sampled_from(files), label="file")
        raw = (source / name).read_bytes()
        how = data.draw(st.sampled_from(["bytes", "bytes", "cut", "line", "garbage", "empty"]), label="how")
        if how == "bytes":
            at, xor = data.draw(st.integers(0, len(raw) - 1)), data.draw(st.integers(1, 255))
            (rec / name).write_bytes(flip(raw, at, xor))
            what = f"{name} byte {at} ^ {xor}"
        elif how == "cut":
            at = data.draw(st.integers(0, len(raw) - 1))
            (rec / name).write_bytes(raw[:at])
            what = f"{name} cut at {at}"
        elif how == "line":
            lines = raw.splitlines(keepends=True)
            i = data.draw(st.integers(0, max(len(lines) - 1, 0)))
            (rec / name).write_bytes(b"".join(lines[:i] + lines[i:i + 1] * 2 + lines[i + 1:]))
            what = f"{name} line {i} twice"
        elif how == "garbage":
            junk = data.draw(st.binary(min_size=1, max_size=64))
            (rec / name).write_bytes(raw + b"\n" + junk + b"\n")
            what = f"{name} + {junk!r}"[:200]
        else:
            (rec / name).write_bytes(b"")
            what = f"{name} empty"
        out = work / "out"
        _sentinel(out)
        tally.check(what, ["replay", str(rec), "--out", str(out), "--cache-dir", str(work / "cache"), "-q"],
                    [out, rec / "golden.json"])

    case()
    return tally


def _trade_log(path: Path) -> None:
    """A small trade log written through the journal (synthetic fills)."""
    from fundarb.core.model import Side
    from fundarb.core.orders import OrderStatus
    from fundarb.live.journal import Journal, VenueTrade

    j = Journal(path)
    h = "ab" * 32
    for n in range(6):
        op = j.begin_operation(n, "open", h, 0.01, {})
        for leg, account, side in (("spot", "binance:spot", Side.BUY), ("perp", "binanceusdm:perp", Side.SELL)):
            order = j.reserve_order(n, op, h, account, account.split(":")[0], "BTC/USDT", leg, "open", side, 0.01,
                                    False)
            order.transition(OrderStatus.SUBMITTED, n)
            j.save_order(order, h, "sent")
            j.record_fill(order, VenueTrade(n, f"{account}|loopback|127.0.0.1:1|-", account.split(":")[0], f"O{n}{leg}",
                                            f"T{n}{leg}", account, order.client_id, side, 0.01, 60_000.0 + n, 0.06,
                                            "USDT", 0.06, "taker"), n, h)
        j.finish_operation(op, n, "done", "")
        j.add_funding(n, n * 8 * 3600 * 10**9, "binanceusdm:perp", "BTC/USDT:USDT", h, 0.5 + n, 0.0001, f"P{n}",
                      "binanceusdm|loopback|127.0.0.1:1|-")
        j.add_alert(n, "test", "warning", h, f"alert {n}")
    j.close()


def run_trade_log(n: int, work: Path) -> Tally:
    tally = Tally("trade_log")
    clean = work / "clean.sqlite"
    _trade_log(clean)
    data_clean = clean.read_bytes()

    @settings(max_examples=n, deadline=None, database=None, derandomize=CI, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data: st.DataObject) -> None:
        path = work / "log.sqlite"
        how = data.draw(st.sampled_from(["bytes", "bytes", "bytes", "page", "cut", "empty"]), label="how")
        if how == "bytes":
            at, xor = data.draw(st.integers(0, len(data_clean) - 1)), data.draw(st.integers(1, 255))
            path.write_bytes(flip(data_clean, at, xor))
            what = f"byte {at} ^ {xor}"
        elif how == "page":
            page = data.draw(st.integers(0, len(data_clean) // 4096 - 1))
            raw = bytearray(data_clean)
            raw[page * 4096:(page + 1) * 4096] = bytes(4096)
            path.write_bytes(bytes(raw))
            what = f"page {page} zeroed"
        elif how == "cut":
            at = data.draw(st.integers(0, len(data_clean) - 1))
            path.write_bytes(data_clean[:at])
            what = f"cut at {at}"
        else:
            path.write_bytes(b"")
            what = "empty file"
        command = data.draw(st.sampled_from([
            ["trade", "log"], ["trade", "log", "--table", "orders"], ["trade", "log", "--table", "funding"],
            ["trade", "log", "--table", "alerts"], ["trade", "log", "--csv", str(work / "x.csv")],
            ["kill", "fuzz"]]), label="command")
        for side in (path.with_name(path.name + "-journal"), path.with_name(path.name + ".lock")):
            side.unlink(missing_ok=True)
        tally.check(f"{what}: {' '.join(command[:3])}", [*command, "--journal", str(path)], [path])

    case()
    return tally


CI = os.environ.get("CI") == "true"  # the same examples on every CI run; a random search elsewhere

KINDS = {"config": run_config, "history": run_history, "capture": run_capture, "trade_log": run_trade_log}


def main() -> None:
    kind, n, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    tally = KINDS[kind](n, work)
    print(json.dumps({"kind": kind, "counts": tally.counts, "failures": tally.failures}))


if __name__ == "__main__":
    main()
