"""Alerts delivered end to end through apprise to real servers on
127.0.0.1: an SMTP server (aiosmtpd) receives the email, a local HTTP server
the webhook; a channel that cannot be reached is stored as failed. Each
alert lands in the live trade log's alerts table with its outcome."""

from __future__ import annotations

import email
import json
import socket
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from aiosmtpd.controller import Controller

from fundarb.config import config_hash, default_config_path, load
from fundarb.live.alerts import AlertConditions, Alerter, AlertThresholds, AppriseChannel, DeskState
from fundarb.live.journal import Journal

T0 = 1_700_000_000 * 1_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              email.message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def webhook():
    received: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def drift_alert(cfg, urls, journal_path):
    """The drift condition on a real config, through a real channel, into a real journal."""
    h = config_hash(cfg)
    journal = Journal(journal_path)
    alerter = Alerter(AppriseChannel(urls), journal, h, cfg.alert_settings)
    (notice,) = AlertConditions(AlertThresholds.of(cfg), label=f"{cfg.name} {h[:12]}").check(
        DeskState(T0, True, drift=0.031))
    return alerter.raise_notice(notice), journal


def test_an_email_alert_arrives_with_its_numbers(smtp, tmp_path, loopback_only):
    inbox, port = smtp
    cfg = load(default_config_path())
    url = f"mailto://127.0.0.1:{port}?from=fundarb@example.com&to=desk@example.com"
    outcome, journal = drift_alert(cfg, [url], tmp_path / "trades.sqlite")
    assert outcome == "sent" and not loopback_only
    ((sender, rcpt, msg),) = inbox.messages
    assert (sender, rcpt) == ("fundarb@example.com", ["desk@example.com"])
    assert msg["Subject"] == "[baseline 5225e223fa7f] delta drift 3.10%"
    text = msg.get_body(preferencelist=("plain",)).get_content()
    assert "drift 3.10% is over the 2% limit: rebalance the legs" in text
    (row,) = journal.rows("alerts")
    assert (row["kind"], row["key"], row["severity"], row["outcome"]) == ("drift", "drift", "warning", "sent")
    assert row["config_hash"] == config_hash(cfg)


def test_a_webhook_alert_posts_json(webhook, tmp_path, loopback_only):
    received, port = webhook
    cfg = load(default_config_path())
    outcome, journal = drift_alert(cfg, [f"json://127.0.0.1:{port}/fundarb-alerts"], tmp_path / "trades.sqlite")
    assert outcome == "sent" and not loopback_only
    ((path, payload),) = received
    assert path == "/fundarb-alerts"
    assert payload["title"] == "[baseline 5225e223fa7f] delta drift 3.10%"
    assert "over the 2% limit" in payload["message"] and payload["type"] == "warning"  # the drift notice's severity


def test_an_unreachable_channel_is_stored_as_failed_without_its_secret(tmp_path, loopback_only):
    cfg = load(default_config_path())
    url = f"mailto://alerts:hunter2-password@127.0.0.1:{free_port()}?from=fundarb@example.com&to=desk@example.com"
    outcome, journal = drift_alert(cfg, [url], tmp_path / "trades.sqlite")
    assert outcome == "failed"
    (row,) = journal.rows("alerts")
    assert row["outcome"] == "failed" and "delivery failed on mailto" in row["message"]
    assert "hunter2" not in json.dumps(journal.rows("alerts"))


def test_a_reconciliation_mismatch_of_the_live_backend_reaches_the_webhook(webhook, tmp_path, loopback_only):
    import asyncio

    from fundarb.live.ccxt.client import Target
    from fundarb.live.execution.reconcile import reconcile
    from fundarb.live.execution.session import open_session
    from fundarb.testkit.emulator.accounts import MARKET, SELL
    from fundarb.testkit.emulator.harness import running_emulator
    from fundarb.testkit.live import KEYS, fund, spot_perp

    received, port = webhook
    env = {**KEYS, "FUNDARB_ALERT_URLS": f"json://127.0.0.1:{port}/desk"}
    with running_emulator() as server:
        fund(server)
        server.accounts.place("binanceusdm", "perp", SELL, MARKET, 0.01)  # a position fundarb did not open

        async def scenario():
            session = await open_session(spot_perp(), tmp_path / "trades.sqlite", Target(api_url=server.base_url),
                                         env=env, dotenv=None)
            try:
                return await reconcile(session, "manual"), session.journal.rows("alerts")
            finally:
                await session.close()

        rec, alerts = asyncio.run(scenario())
    assert not rec.ok
    ((path, payload),) = received
    assert path == "/desk" and payload["title"] == "[spot_perp dfe6e84d4374] reconciliation mismatch"
    assert "the venue holds -0.01 BTC perp, the journal's fills +0" in payload["message"]
    assert [(a["kind"], a["outcome"]) for a in alerts] == [("reconciliation_mismatch", "sent")]
    assert not loopback_only
