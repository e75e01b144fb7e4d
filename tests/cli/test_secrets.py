"""No key, secret, password or alert token reaches any output.

Distinctive fake credentials are planted in the environment and in a
``.env`` file; the CLI then runs (as a real process, in a working folder of
the test's own) into the failures that carry request text: a venue behind a
loopback proxy that answers signed requests with a 500 whose body echoes the
request's URL and headers, malformed alert URLs, a promotion. Every output is
then searched for the planted values: stdout, stderr, every file the run
left under the working folder (the trade log, lock files, the promotion
store and record, log files) and every row of every table of every SQLite
file there, and what the alert webhook received. Zero hits.

Also here: the files that hold the desk's state are created readable by
their owner only, and an alert reaches apprise with its severity.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import fund

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "PLANTED"  # every planted value holds it; nothing else does
KEYS_ENV = {
    "FUNDARB_BINANCE_API_KEY": "PLANTEDKEYspot7f3a9c1e5b2d8f4a6c0e",
    "FUNDARB_BINANCEUSDM_API_KEY": "PLANTEDKEYperp2b8d4f6a0c1e3b5d7f9a",
    "FUNDARB_BINANCEUSDM_SECRET": "PLANTEDSECRETperp9e7c5a3b1d0f2e4c",
    "FUNDARB_BYBIT_API_KEY": "PLANTEDKEYbybit5c3a1e9d7b",
    "FUNDARB_BYBIT_SECRET": "PLANTEDSECRETbybit0a2c4e6f",
}
DOTENV_SECRET = "PLANTEDSECRETspot4d6f8a0c2e1b3d5f"  # only in .env: the environment has no FUNDARB_BINANCE_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the servers

@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def echo_proxy(upstream: str, fails: Callable[[str, str], bool], echoed: list[str]) -> type[BaseHTTPRequestHandler]:
    """A proxy to the emulator at ``upstream`` that answers the requests
    ``fails(method, path)`` picks with a 500 whose body echoes the request's
    headers and URL, as a broken gateway in front of a venue might."""
    host, port = urlsplit(upstream).hostname, urlsplit(upstream).port

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if fails(self.command, self.path):
                text = ("upstream failed; request headers: "
                        + "; ".join(f"{k}: {v}" for k, v in self.headers.items())
                        + f"; request: {self.command} http://{self.headers.get('Host')}{self.path} "
                        + body.decode(errors="replace"))
                echoed.append(text)
                self._reply(500, "text/plain", text.encode())
                return
            conn = HTTPConnection(host, port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body or None, headers)
                res = conn.getresponse()
                self._reply(res.status, res.getheader("Content-Type") or "application/json", res.read())
            finally:
                conn.close()

        def _reply(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, *args) -> None:
            pass

    return Proxy


def webhook(received: list[dict]) -> type[BaseHTTPRequestHandler]:
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    return Hook


# ------------------------------------------------------------------ running the CLI with planted secrets

@pytest.fixture
def desk(tmp_path: Path) -> Path:
    """A working folder with a .env holding one planted secret, and a config."""
    folder = tmp_path / "desk"
    folder.mkdir()
    (folder / ".env").write_text(f"FUNDARB_BINANCE_SECRET={DOTENV_SECRET}\n")
    return folder


def fundarb(desk: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI as a real process in ``desk`` with the planted environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_")}
    base.update(KEYS_ENV, FUNDARB_LOCK_DIR=str(desk / "locks"),
                FUNDARB_PROMOTION_KEY_FILE=str(desk / "key" / "promotion.key"), COLUMNS="200")
    base.update(env or {})
    return subprocess.run([sys.executable, "-c", "from fundarb.cli.main import main; main()", *args], cwd=desk, env=base,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def sqlite_rows(path: Path) -> str:
    """Every row of every table of an SQLite file, as text."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(f"{t}: {row!r}" for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))
    finally:
        db.close()


def outputs(desk: Path, *runs: subprocess.CompletedProcess, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Every output to search: each run's stdout and stderr, each file under
    ``desk`` but the .env (bytes, so a WAL file counts too), each SQLite
    file's rows, and ``extra`` texts."""
    found = {}
    for i, run in enumerate(runs):
        found[f"run {i} stdout"], found[f"run {i} stderr"] = run.stdout, run.stderr
    for path in sorted(desk.rglob("*")):
        if path.is_file() and path.name != ".env":
            found[str(path.relative_to(desk))] = path.read_bytes().decode("latin-1")
            if path.read_bytes()[:16] == b"SQLite format 3\x00":
                found[f"{path.relative_to(desk)} rows"] = sqlite_rows(path)
    for i, text in enumerate(extra):
        found[f"extra {i}"] = text
    return found


def leaks(found: dict[str, str]) -> dict[str, list[str]]:
    hits = {}
    for where, text in found.items():
        spots = [text[max(m.start() - 60, 0):m.end() + 40] for m in re.finditer(PLANTED, text)]
        if spots:
            hits[where] = spots[:3]
    return hits


# ------------------------------------------------------------------ the venue answering with an echo

def signed(method: str, path: str) -> bool:
    return "signature=" in path


def first_placements() -> Callable[[str, str], bool]:
    """The first order placement on each venue fails (the re-send goes through)."""
    seen: set[str] = set()
    lock = threading.Lock()

    def fails(method: str, path: str) -> bool:
        endpoint = path.split("?")[0]
        with lock:
            if method != "POST" or endpoint not in ("/api/v3/order", "/fapi/v1/order") or endpoint in seen:
                return False
            seen.add(endpoint)
            return True

    return fails


@pytest.mark.parametrize("fails, command", [
    (lambda: signed, ("reconcile",)),
    (first_placements, ("trade", "open", "--size", "0.01", "--yes")),
], ids=["signed-reads", "placements"])
def test_a_venue_error_echoing_the_signed_request_leaks_nothing(desk, fails, command):
    echoed: list[str] = []
    received: list[dict] = []
    config = desk / "quick.toml"  # a short request timeout: a failed placement is re-sent after its receive window
    config.write_text((ROOT / "sims" / "spot_perp.toml").read_text() + "\n[live]\nrequest_timeout_seconds = 1.0\n")
    with running_emulator() as server, serving(echo_proxy(server.base_url, fails(), echoed)) as port, \
            serving(webhook(received)) as hook:
        fund(server)
        alerts = f"json://PLANTEDUSER:PLANTEDPASSWORD@127.0.0.1:{hook}/PLANTEDHOOKPATH"
        run = fundarb(desk, *command, "--config", config.name, "--api-url", f"http://127.0.0.1:{port}",
                      "--journal", "state/trades.sqlite", env={"FUNDARB_ALERT_URLS": alerts})
    assert echoed, "the proxy never failed a request: the test drove nothing"
    assert any(KEYS_ENV["FUNDARB_BINANCE_API_KEY"] in e or KEYS_ENV["FUNDARB_BINANCEUSDM_API_KEY"] in e
               for e in echoed)  # the echo did carry a key
    found = outputs(desk, run, extra=tuple(json.dumps(r["body"]) for r in received))  # what was delivered
    assert leaks(found) == {}
    assert "signature=" not in run.stdout + run.stderr


# ------------------------------------------------------------------ alert URLs

@pytest.mark.parametrize("urls, says", [
    ("tgram//PLANTEDTOKEN/123", "the 1st alert URL is malformed"),
    ("json://127.0.0.1:9/desk PLANTEDTOKEN-without-a-scheme", "the 2nd alert URL of 2 is malformed"),
    ("tgram://PLANTEDTOKEN/123", "the 1st alert URL (scheme 'tgram') is not a valid apprise URL"),
    ("planted+PLANTEDTOKEN://x/y", "the 1st alert URL has a scheme apprise does not know"),
], ids=["no-scheme-separator", "second-entry", "bad-token", "unknown-scheme"])
def test_a_malformed_alert_url_is_named_by_its_place_never_echoed(desk, urls, says):
    from fundarb.live.journal import Journal

    (desk / "state").mkdir()
    Journal(desk / "state" / "trades.sqlite").close()
    run = fundarb(desk, "kill", "secrets test", "--journal", "state/trades.sqlite", env={"FUNDARB_ALERT_URLS": urls})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "alert not sent" in run.stderr and says in " ".join(run.stderr.split())
    assert leaks(outputs(desk, run)) == {}


def test_an_alert_reaches_apprise_with_its_severity():
    from fundarb.live.alerts import AppriseChannel

    received: list[dict] = []
    with serving(webhook(received)) as port:
        channel = AppriseChannel([f"json://127.0.0.1:{port}/desk"])
        for severity in ("critical", "warning", "info"):
            assert channel.send(f"{severity} title", "body", severity) == (True, "")
    assert [r["body"]["type"] for r in received] == ["failure", "warning", "info"]


def test_the_alerter_sends_and_stores_scrubbed_text(tmp_path, monkeypatch):
    from fundarb.live.alerts import Alerter, AppriseChannel, Notice
    from fundarb.live.journal import Journal

    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", KEYS_ENV["FUNDARB_BINANCE_API_KEY"])
    received: list[dict] = []
    journal = Journal(tmp_path / "trades.sqlite")
    with serving(webhook(received)) as port:
        url = f"json://PLANTEDUSER:PLANTEDPASSWORD@127.0.0.1:{port}/PLANTEDHOOKPATH"
        alerter = Alerter(AppriseChannel([url]), journal, "h" * 64)
        venue_text = (f"binance GET https://api.binance.com/api/v3/account?timestamp=1&signature=abc 500 "
                      f"X-MBX-APIKEY: {KEYS_ENV['FUNDARB_BINANCE_API_KEY']} via {url}")
        assert alerter.raise_notice(Notice(1, "kill_switch", "kill_switch", "critical",
                                           "kill switch fired", f"new orders halted: {venue_text}")) == "sent"
    ((hit),) = received
    assert hit["body"]["type"] == "failure" and "api/v3/account?***" in hit["body"]["message"]
    rows = journal.rows("alerts")
    journal.close()
    assert leaks(outputs(tmp_path, extra=(json.dumps(hit["body"]), json.dumps(rows)))) == {}


# ------------------------------------------------------------------ a promotion

def test_a_promotion_leaks_nothing_and_its_store_and_key_are_private(desk):
    config = desk / "secrets_bull.toml"
    text = (ROOT / "sims" / "stress_bull.toml").read_text()
    for field, value in (("name", "secrets_bull"), ("start", "2024-02-01"), ("end", "2024-04-01")):
        text = re.sub(rf'(?m)^{field} = ".*"$', f'{field} = "{value}"', text, count=1)
    config.write_text(text)
    run = fundarb(desk, "promote", config.name, "--paths", "6", "--days", "60", "--train", "30d", "--test", "14d",
                  "--walk-paths", "4", "--cache-dir", "cache",
                  env={"FUNDARB_ALERT_URLS": "tgram://PLANTEDTOKEN/123"}, timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    store, key = desk / "state" / "promotions.sqlite", desk / "key" / "promotion.key"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert leaks(outputs(desk, run)) == {}


# ------------------------------------------------------------------ the runner's log

def test_the_runner_log_scrubs_every_field_and_its_file_is_private(tmp_path, monkeypatch):
    import io

    from fundarb.app.runner.logs import run_logger

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"FUNDARB_BINANCE_SECRET={DOTENV_SECRET}\n")
    for name, value in KEYS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FUNDARB_ALERT_URLS", "tgram://PLANTEDTOKEN/123")
    stream, path = io.StringIO(), tmp_path / "logs" / "run.jsonl"
    log = run_logger("c" * 64, "live", path, stream=stream)
    venue_text = (f"binanceusdm POST http://127.0.0.1:1/fapi/v1/order?symbol=BTCUSDT&signature=deadbeef 500 "
                  f"{{\"apiKey\": \"{KEYS_ENV['FUNDARB_BINANCEUSDM_API_KEY']}\", \"secret\": \"{DOTENV_SECRET}\"}}")
    log.warning("venue_margin_view", error=f"ExchangeNotAvailable: {venue_text}",
                nested={"why": [venue_text, RuntimeError(KEYS_ENV["FUNDARB_BYBIT_SECRET"])]},
                alert="tgram://PLANTEDTOKEN/123 failed", count=3, ok=True, ratio=0.5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["venue_margin_view"]
    assert lines[0]["count"] == 3 and lines[0]["ok"] is True and lines[0]["ratio"] == 0.5
    assert "/fapi/v1/order?***" in lines[0]["error"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / ".env").unlink()
    assert leaks(outputs(tmp_path, extra=(stream.getvalue(),))) == {}


# ------------------------------------------------------------------ lock files

def test_lock_files_are_private_and_their_folder_too(tmp_path, monkeypatch):
    from fundarb.live.runlock import ActorLock

    class Ident:
        key, text = "binance|test-account", "binance account"

        def describe(self) -> str:
            return self.text

    monkeypatch.setenv("FUNDARB_LOCK_DIR", str(tmp_path / "home" / "locks"))
    journal = tmp_path / "state" / "trades.sqlite"
    with ActorLock(journal, [Ident()], doing="test"):
        lock_files = [journal.with_name("trades.sqlite.lock"), *(tmp_path / "home" / "locks").iterdir()]
        assert len(lock_files) == 2
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in lock_files)
        assert stat.S_IMODE((tmp_path / "home" / "locks").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
