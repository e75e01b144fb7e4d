"""Alert conditions, de-duplication, rate limits and pausing on a simulated
clock (no channel is real here: a recording stand-in takes the sends)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.config import AlertSettings, default_config_path, load
from fundarb.live.alerts import AlertConditions, Alerter, AlertThresholds, AppriseChannel, DeskState, Notice, alert_urls

MIN = 60 * 1_000_000_000
T0 = 1_700_000_000 * 1_000_000_000


class Recorded:
    """A channel that records what it is asked to send (and can be told to fail)."""

    def __init__(self, ok: bool = True) -> None:
        self.sent: list[tuple[str, str]] = []
        self.ok = ok

    def send(self, title: str, body: str, severity: str = "info") -> tuple[bool, str]:
        self.sent.append((title, body))
        return self.ok, "" if self.ok else "delivery failed on mailto"


class Log:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add_alert(self, ts, kind, severity, config_hash, message, key="", outcome="recorded"):
        self.rows.append(dict(ts=ts, kind=kind, severity=severity, config_hash=config_hash, message=message,
                              key=key, outcome=outcome))


@pytest.fixture(scope="module")
def cfg():
    return load(default_config_path())


def conditions(cfg) -> AlertConditions:
    return AlertConditions(AlertThresholds.of(cfg), label="baseline")


def notice(ts: int, key: str = "drift", severity: str = "warning") -> Notice:
    return Notice(ts, key.split(":")[0], key, severity, f"title {key}", "body")


# ------------------------------------------------------------------ conditions

def test_each_condition_fires_at_its_threshold_and_not_below(cfg):
    r = cfg.risk
    quiet = DeskState(T0, True, drift=r.max_drift * 0.99, margin_buffer=r.min_margin_buffer * 1.01,
                      drawdown=0.79 * r.max_drawdown)
    assert conditions(cfg).check(quiet) == []
    loud = DeskState(T0, True, drift=r.max_drift * 1.5, margin_buffer=r.min_margin_buffer * 0.9,
                     drawdown=0.8 * r.max_drawdown, reconciliation_mismatch="perp -0.02 vs -0.01",
                     unreachable=(("binanceusdm:perp", 61.0), ("binance:spot", 10.0)), missed_settlements=1,
                     halted="drawdown 5.1%")
    found = {n.key: n for n in conditions(cfg).check(loud)}
    assert set(found) == {"drift", "margin_buffer", "drawdown", "reconciliation_mismatch",
                          "venue_unreachable:binanceusdm:perp", "missed_settlement:1", "kill_switch"}
    assert found["drift"].severity == "warning" and "3.00%" in found["drift"].body and "2%" in found["drift"].body
    assert found["margin_buffer"].severity == "warning"  # critical only under half the floor
    assert found["kill_switch"].severity == "critical" and "drawdown 5.1%" in found["kill_switch"].body
    assert all(n.title.startswith("[baseline] ") for n in found.values())


def test_margin_buffer_is_critical_under_half_the_floor_and_silent_when_flat(cfg):
    floor = cfg.risk.min_margin_buffer
    (n,) = conditions(cfg).check(DeskState(T0, True, margin_buffer=floor / 2 - 0.01))
    assert n.severity == "critical"
    assert conditions(cfg).check(DeskState(T0, False, margin_buffer=0.0)) == []


def test_funding_alerts_on_crossings_only(cfg):
    c = conditions(cfg)
    entry, exit_ = cfg.strategy.entry_apr, cfg.strategy.exit_apr
    assert c.check(DeskState(T0, False, funding_apr=entry + 0.01)) == []  # the first look sets the side
    assert c.check(DeskState(T0 + MIN, False, funding_apr=entry + 0.02)) == []
    assert c.check(DeskState(T0 + 2 * MIN, False, funding_apr=entry - 0.01)) == []  # down into the band: no news
    (up,) = c.check(DeskState(T0 + 3 * MIN, False, funding_apr=entry + 0.005))
    assert up.kind == "funding_above_entry" and f"{entry:.2%}" in up.body
    (down,) = c.check(DeskState(T0 + 4 * MIN, True, funding_apr=exit_ - 0.01, predicted_apr=-0.02))
    assert down.kind == "funding_below_exit" and "predicted -2.00% APR" in down.body
    # crossing up while already in position is not an entry signal
    assert c.check(DeskState(T0 + 5 * MIN, True, funding_apr=entry + 0.01)) == []


def test_missed_settlements_and_the_kill_switch_alert_once_per_new_event(cfg):
    c = conditions(cfg)
    assert [n.kind for n in c.check(DeskState(T0, True, missed_settlements=1, halted="kill command"))] == [
        "missed_settlement", "kill_switch"]
    assert c.check(DeskState(T0 + MIN, True, missed_settlements=1, halted="kill command")) == []
    (again,) = c.check(DeskState(T0 + 2 * MIN, True, missed_settlements=2, halted="kill command"))
    assert again.key == "missed_settlement:2" and "1 settlement(s)" in again.body


# ------------------------------------------------------------------ de-duplication, rate limit, pause

def alerter(channel=None, **policy) -> tuple[Alerter, Log]:
    log = Log()
    return Alerter(channel if channel is not None else Recorded(), log, "h" * 64, AlertSettings(**policy)), log


def test_the_same_key_is_sent_once_per_window_unless_it_gets_worse():
    a, log = alerter(dedup_minutes=30)
    assert a.raise_notice(notice(T0)) == "sent"
    assert a.raise_notice(notice(T0 + 29 * MIN)) == "deduplicated"
    assert a.raise_notice(notice(T0 + 29 * MIN, severity="critical")) == "sent"  # escalation gets through
    assert a.raise_notice(notice(T0 + 30 * MIN)) == "deduplicated"  # within the critical's window now
    assert a.raise_notice(notice(T0 + 59 * MIN)) == "sent"
    # repeats are counted into the next stored row, not stored one by one
    assert [r["outcome"] for r in log.rows] == ["sent", "sent", "sent"]
    assert "1 repeat held back" in log.rows[1]["message"] and "1 repeat held back" in log.rows[2]["message"]


def test_a_flapping_condition_is_heard_once_per_window(cfg):
    channel = Recorded()
    a, log = alerter(channel, dedup_minutes=30)
    c = conditions(cfg)
    for minute in range(120):  # drift over and under the limit every other minute for two hours
        drift = cfg.risk.max_drift * (1.5 if minute % 2 == 0 else 0.5)
        for n in c.check(DeskState(T0 + minute * MIN, True, drift=drift)):
            a.raise_notice(n)
    assert len(channel.sent) == math.ceil(120 / 30)
    # 60 breaches (even minutes); sent at minutes 0, 30, 60, 90; the 14 in between each are counted
    assert [r["outcome"] for r in log.rows] == ["sent"] * 4
    assert all("14 repeats held back" in r["message"] for r in log.rows[1:])


def test_rate_limit_holds_back_over_the_hourly_budget_but_never_critical():
    a, log = alerter(max_per_hour=20)
    outcomes = [a.raise_notice(notice(T0 + i * MIN, key=f"venue_unreachable:v{i}", severity="warning"))
                for i in range(25)]
    assert outcomes.count("sent") == 20 and outcomes[20:] == ["rate_limited"] * 5
    assert a.raise_notice(notice(T0 + 25 * MIN, key="kill_switch", severity="critical")) == "sent"
    # an hour after the first, the rolling window has room again
    assert a.raise_notice(notice(T0 + 60 * MIN, key="drift")) == "sent"


def test_pause_holds_back_all_but_critical_and_everything_is_stored():
    a, log = alerter()
    a.paused = True
    assert a.raise_notice(notice(T0, key="drift")) == "paused"
    assert a.raise_notice(notice(T0, key="kill_switch", severity="critical")) == "sent"
    a.paused = False
    assert a.raise_notice(notice(T0 + MIN, key="drift")) == "sent"  # a paused notice set no dedup window
    assert [r["outcome"] for r in log.rows] == ["paused", "sent", "sent"]


def test_no_channel_and_a_failed_delivery_are_stored_and_a_failure_is_retried_next_time():
    a, log = alerter(channel=None)
    a.channel = None
    assert a.raise_notice(notice(T0)) == "no_channel"
    assert a.raise_notice(notice(T0 + MIN)) == "no_channel" and len(log.rows) == 1  # a held condition: one row
    failing = Recorded(ok=False)
    b, blog = alerter(failing)
    assert b.raise_notice(notice(T0)) == "failed"
    assert b.raise_notice(notice(T0 + MIN)) == "failed"  # not de-duplicated: nothing got through
    assert "delivery failed on mailto" in blog.rows[0]["message"] and len(failing.sent) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["a", "b", "c", "d", "e"]),
                          st.sampled_from(["info", "warning", "critical"])), min_size=1, max_size=120),
       st.integers(1, 10), st.integers(1, 60))
def test_budget_and_dedup_hold_for_any_sequence(steps, per_hour, dedup):
    a, log = alerter(max_per_hour=per_hour, dedup_minutes=dedup)
    ts, sent = T0, []
    rank = {"info": 0, "warning": 1, "critical": 2}
    for gap, key, severity in steps:
        ts += gap * MIN
        if a.raise_notice(notice(ts, key=key, severity=severity)) == "sent":
            sent.append((ts, key, rank[severity]))
    assert len(log.rows) <= len(steps)
    assert sum(r["outcome"] == "sent" for r in log.rows) == len(sent)
    for i, (t, key, r) in enumerate(sent):
        window = [s for s in sent[:i + 1] if t - s[0] < 60 * MIN and s[2] < 2]
        assert len(window) <= per_hour or r == 2
        earlier = [s for s in sent[:i] if s[1] == key and t - s[0] < dedup * MIN]
        assert all(r > s[2] for s in earlier)  # within the window only a worse notice is sent again


# ------------------------------------------------------------------ configuration of channels

def test_alert_urls_come_from_the_environment_then_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("FUNDARB_ALERT_URLS=json://127.0.0.1:1/a, mailto://127.0.0.1:2?to=x@example.com\n")
    assert alert_urls({}, dotenv) == ["json://127.0.0.1:1/a", "mailto://127.0.0.1:2?to=x@example.com"]
    assert alert_urls({"FUNDARB_ALERT_URLS": "json://127.0.0.1:3/b"}, dotenv) == ["json://127.0.0.1:3/b"]
    assert alert_urls({}, None) == []


def test_an_invalid_alert_url_is_refused_naming_its_place_not_its_text():
    with pytest.raises(ValueError) as err:
        AppriseChannel(["nosuchscheme://user:s3cret@host"])
    assert "the 1st alert URL has a scheme apprise does not know" in str(err.value)
    assert "nosuchscheme" not in str(err.value) and "s3cret" not in str(err.value)


# ------------------------------------------------------------------ missed settlements on live venues

def test_a_settlement_passed_in_position_without_a_payment_is_missed_after_the_grace():
    from fundarb.ops.sources import SettlementWatch

    H = 60 * MIN
    w = SettlementWatch(grace_ns=15 * MIN)
    w.announce(T0 + 8 * H)
    assert w.update(T0 + 7 * H, True, set()) == 0  # not yet due
    assert w.update(T0 + 8 * H + 5 * MIN, True, set()) == 0  # due, within the grace
    assert w.update(T0 + 8 * H + 16 * MIN, True, set()) == 1  # no payment learned: missed
    w.announce(T0 + 16 * H)
    assert w.update(T0 + 16 * H + 20 * MIN, True, {T0 + 16 * H}) == 1  # paid: not missed
    w.announce(T0 + 24 * H)
    assert w.update(T0 + 24 * H + 30 * MIN, False, set()) == 1  # flat at the instant: nothing owed
