"""`--api-url` on every command that signs requests: loopback, or https to
another machine only with --i-know-remote-api-url; refused in one line before
any venue is contacted (nothing here reaches the network)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app

COMMANDS = [["trade", "open", "--size", "0.01"], ["trade", "close"], ["positions"], ["reconcile"],
            ["kill", "x", "--flatten"], ["run", "sims/baseline.toml", "--paper"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("url", ["http://10.1.2.3:8765", "https://venue.example.net", "ftp://127.0.0.1:1",
                                 "http://user:pw@127.0.0.1:1"])
def test_a_remote_or_plain_text_api_url_is_refused_in_one_line(command, url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sims").mkdir()
    from fundarb.config import default_config_path

    (tmp_path / "sims" / "baseline.toml").write_text(default_config_path().read_text())
    result = CliRunner().invoke(app, [*command, "--api-url", url, "--journal", str(tmp_path / "t.sqlite")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --api-url"), result.output
    assert "pw" not in result.output and "10.1.2.3:8765" not in result.output
    assert not (tmp_path / "t.sqlite").exists()  # refused before anything was opened


def test_a_remote_https_url_passes_only_when_the_operator_says_so(tmp_path):
    from fundarb.cli.trade import TRADED, _context

    cfg, path, target = _context(None, tmp_path / "t.sqlite", "https://venue.example.net", False, True, kinds=TRADED)
    assert target.api_url == "https://venue.example.net"
    cfg, path, target = _context(None, tmp_path / "t.sqlite", "http://127.0.0.1:8765", False, kinds=TRADED)
    assert target.api_url == "http://127.0.0.1:8765"


def test_the_websocket_of_an_https_base_is_wss_never_plain():
    import ccxt.pro

    from fundarb.testkit.emulator.ws import point_ccxt_pro

    client = point_ccxt_pro(ccxt.pro.binanceusdm(), "https://venue.example.net")
    urls = [u for u in _strings(client.urls["api"]["ws"])]
    assert urls and all(u.startswith("wss://venue.example.net") for u in urls)


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, str):
        yield node
