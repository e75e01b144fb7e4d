"""`fundarb run --paper` on the recommended venue pairs, as a user runs it:
Coinbase spot with a Binance USD-M short and Kraken spot with a Bybit linear
short, on the emulator's real data played forward (about 100 venue minutes a
second) for a bounded run (``--duration``). No API keys: nothing is sent; the
spot venue's prices come from its public REST endpoints (its websocket is not
served, so the feed falls back to polling, as it would after a real outage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.emulator.server import ORDER_PLACEMENT
from fundarb.testkit.live import SPOT_VENUE_PAIRS, pair_config
from fundarb.testkit.runner import KEEP_ENV, START, runner_config, venue_clock, write_config

pytestmark = pytest.mark.usefixtures("hang_guard")
CLI = [sys.executable, "-c", "from fundarb.cli.main import main; main()"]
DURATION_S = 18  # the run's own bound: about 30 venue hours, three or four settlements
# each spot venue's public quote endpoint, which the paper feed polls
QUOTE_PATHS = {"coinbase": "/api/v3/brokerage/market/products/{product_id}/ticker", "kraken": "/0/public/Ticker"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_") or k in KEEP_ENV}
    env["COLUMNS"] = "100"
    return env


@pytest.mark.parametrize("name", list(SPOT_VENUE_PAIRS))
def test_a_bounded_paper_run_enters_is_paid_funding_and_sends_nothing(tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    config = write_config(runner_config(pair_config(name)), tmp_path)
    journal = tmp_path / "paper.sqlite"
    with running_emulator(START) as server, venue_clock(server):
        done = subprocess.run([*CLI, "run", str(config), "--paper", "--api-url", server.base_url, "--journal",
                               str(journal), "--duration", str(DURATION_S)], cwd=tmp_path, env=_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DURATION_S + 30)
        log = server.log.entries
    assert done.returncode == 0, done.stderr[-2000:]
    # every REST and websocket call went to the emulator: none to the real hosts
    assert not [host for host in ("coinbase.com", "kraken.com", "binance.com", "bybit.com") if host in done.stdout]
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert events[-1]["event"] == "stopped" and set(events[-1]["feeds"]) == {f"{spot}:spot", f"{perp}:perp"}
    kinds = Counter(e["event"] for e in events)
    assert kinds["fill"] == 2 and kinds["funding"] >= 2, kinds

    j = Journal(journal)
    try:
        fills = j.rows("fills")
        assert sorted((f["account"], f["side"]) for f in fills) == [(f"{perp}:perp", "sell"), (f"{spot}:spot", "buy")]
        (buy,) = [f for f in fills if f["account"] == f"{spot}:spot"]
        (sell,) = [f for f in fills if f["account"] == f"{perp}:perp"]
        assert buy["qty"] == pytest.approx(sell["qty"]) and buy["qty"] > 0
        # the simulator's fill at the config's fee for the venue: Coinbase 0.6%, Kraken 0.4% of the notional
        assert buy["fee"] == pytest.approx(pair_config(name).spot.taker_fee * buy["qty"] * buy["price"], rel=1e-6)
        paid = j.rows("funding")
        assert len(paid) >= 2 and all(p["account"] == f"{perp}:perp" and p["amount"] > 0 for p in paid)
        assert j.rows("alerts") == [], [a["message"] for a in j.rows("alerts")]
        assert all(identity.paper for identity in j.venues().values())  # a paper trade log of both venues
    finally:
        j.close()

    spot_calls = [e for e in log if e.venue == spot]
    assert any(e.path == QUOTE_PATHS[spot] and e.status == 200 for e in spot_calls)  # its prices were polled
    assert not [e for e in log if (e.method, e.path) in ORDER_PLACEMENT]  # paper: no order reached a venue
    assert all("private" not in e.path and "/accounts" not in e.path for e in spot_calls)  # nor a signed call
