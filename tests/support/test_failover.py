"""Host failover: after repeated failures on one host the next is used, each
switch reported once; the primary is probed while a backup is in use and
taken back when it answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.model import NS_PER_SECOND
from fundarb.support.failover import HostFailover

HOSTS = ("api.binance.com", "api-gcp.binance.com", "api1.binance.com")
S = NS_PER_SECOND


def test_three_failures_in_a_row_move_to_the_next_host_once():
    f = HostFailover(HOSTS)
    assert f.failure(1, "timeout") is None and f.failure(2, "502") is None
    switch = f.failure(3, "timeout")
    assert switch is not None and (switch.old, switch.new, switch.ts) == (HOSTS[0], HOSTS[1], 3)
    assert "3 failures in a row (timeout)" == switch.reason and not switch.back_to_primary
    assert f.active == HOSTS[1] and f.on_backup
    assert f.failure(4, "timeout") is None  # the count starts again on the new host


def test_an_answer_in_between_resets_the_count():
    f = HostFailover(HOSTS)
    f.failure(1, "timeout"), f.failure(2, "timeout")
    f.success(3)
    assert f.failure(4, "timeout") is None and f.failure(5, "timeout") is None and f.active == HOSTS[0]


def test_the_primary_is_probed_on_its_interval_and_taken_back_when_it_answers():
    f = HostFailover(HOSTS, probe_seconds=60.0)
    for t in range(3):
        f.failure(t, "connection refused")
    assert f.active == HOSTS[1]
    assert not f.probe_due(2 + 59 * S) and f.probe_due(2 + 60 * S)
    assert f.probed(2 + 60 * S, answered=False) is None and f.active == HOSTS[1]
    assert not f.probe_due(2 + 119 * S) and f.probe_due(2 + 120 * S)
    back = f.probed(2 + 120 * S, answered=True)
    assert back is not None and back.back_to_primary and (back.old, back.new) == (HOSTS[1], HOSTS[0])
    assert f.active == HOSTS[0] and not f.on_backup and not f.probe_due(10**15)


def test_one_host_has_nowhere_to_go():
    f = HostFailover(("fapi.binance.com",))
    assert all(f.failure(t, "timeout") is None for t in range(10)) and f.active == "fapi.binance.com"


@pytest.mark.parametrize("hosts", [(), ("a", "a")])
def test_a_host_list_that_is_empty_or_names_a_host_twice_is_refused(hosts):
    with pytest.raises(ValueError):
        HostFailover(hosts)


EVENTS = st.lists(st.one_of(st.just("ok"), st.just("fail"), st.just("probe_ok"), st.just("probe_fail")), max_size=200)


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, n=st.integers(1, 5), fail_after=st.integers(1, 4))
def test_every_change_of_host_is_reported_exactly_once_and_only_after_enough_failures(events, n, fail_after):
    hosts = tuple(f"h{i}" for i in range(n))
    f = HostFailover(hosts, fail_after=fail_after, probe_seconds=1.0)
    in_a_row = 0
    for t, what in enumerate(events):
        before = f.active
        now = t * S
        if what == "ok":
            f.success(now)
            switch, in_a_row = None, 0
        elif what == "fail":
            in_a_row += 1
            switch = f.failure(now, "timeout")
        else:
            switch = f.probed(now, answered=what == "probe_ok")
        assert f.active in hosts
        if switch is None:
            assert f.active == before
        else:
            assert (switch.old, switch.new) == (before, f.active) and before != f.active
            if what == "fail":
                assert in_a_row >= fail_after
                in_a_row = 0
            else:
                assert f.active == hosts[0]
                in_a_row = 0


def _ccxt_hosts(exchange_id: str) -> set[str]:
    """The hosts (``host[:port]``) of ccxt's URL tables for ``exchange_id``, REST and websocket."""
    from urllib.parse import urlsplit

    import ccxt.pro

    client = getattr(ccxt.pro, exchange_id)()
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, str) and "://" in node:
            found.add(urlsplit(node.replace("{hostname}", getattr(client, "hostname", "") or "")).netloc)

    walk(client.urls["api"])
    return found


@pytest.mark.parametrize("exchange_id", ["binance", "binanceusdm", "binancecoinm", "bybit"])
def test_each_shipped_backup_is_for_a_host_ccxt_really_calls(exchange_id):
    from fundarb.venues import quirks

    backups = quirks(exchange_id).backup_hosts
    assert backups, exchange_id
    called = _ccxt_hosts(exchange_id)
    for primary, alternatives in backups.items():
        assert primary in called, f"{exchange_id}: ccxt calls no {primary}"
        HostFailover((primary, *alternatives))  # a list failover takes: no host twice
        assert all(a not in called for a in alternatives)  # ccxt's own defaults are not listed as backups
