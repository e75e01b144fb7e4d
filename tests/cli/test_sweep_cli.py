"""`fundarb sweep` end to end on a small grid: outputs, the recommended TOML,
and clear errors before any work for a bad grid."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import config_hash, load

BASELINE = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    res = runner.invoke(app, [
        "sweep", str(BASELINE), "--grid", "entry=0.02,0.08,leverage=2,3", "--paths", "3", "--days", "30",
        "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_sweep_writes_ranked_table_heatmaps_and_json(swept):
    out, output = swept
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["grid"] == {"entry": [0.02, 0.08], "leverage": [2.0, 3.0]}
    assert [r["rank"] for r in doc["ranked"]] == [1, 2, 3, 4]
    ranked = pl.read_csv(out / "ranked.csv")
    assert ranked["point"].to_list() == [r["point"] for r in doc["ranked"]]
    eligible = ranked.filter(pl.col("eligible"))["p5_net_apr"].to_list()
    assert eligible == sorted(eligible, reverse=True)
    for key in ("p5_net_apr", "median_net_apr", "p_max_drawdown_ok", "p_all_gates", "median_sharpe"):
        assert (out / f"heatmap_{key}.png").read_bytes()[:4] == b"\x89PNG"
    assert "rule:" in output


def test_recommended_toml_is_the_chosen_grid_point_and_loads(swept):
    out, _ = swept
    doc = json.loads((out / "sweep.json").read_text())
    rec = doc["recommended"]
    if rec is None:  # the rule found no config: then no file either
        assert not (out / "recommended.toml").exists()
        return
    cfg = load(out / "recommended.toml")
    assert cfg.name == "spot_perp-recommended"
    assert cfg.strategy.entry_apr == rec["params"]["entry"]
    assert cfg.strategy.notional / cfg.perp_cash == pytest.approx(rec["params"]["leverage"], rel=1e-4)
    # same config as the one swept, apart from its name
    import attrs

    assert config_hash(attrs.evolve(cfg, name="spot_perp")) == rec["config_hash"]
    top = doc["ranked"][0]
    assert top["point"] == rec["point"]


@pytest.mark.parametrize("grid, message", [
    ("entry=0.04,,0.06", "empty value"),
    ("entry:0.04", "must start with name=value"),
    ("leverage=2,9", "leverage must be > 0 and <= risk.max_leverage"),
    ("nonsense=1", "unknown parameter 'nonsense'"),
])
def test_bad_grid_is_one_error_and_writes_nothing(grid, message, tmp_path):
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", str(BASELINE), "--grid", grid, "--paths", "2", "--out", str(out)])
    assert res.exit_code == 2
    assert message in res.output
    assert res.output.count("error:") == 1
    assert not out.exists()


@pytest.mark.parametrize("config", ["coin_margined.toml", "coin_margined_btc.toml", "unified.toml"])
def test_a_leverage_grid_on_a_one_account_structure_is_one_error(config, tmp_path):
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", str(BASELINE.parent / config), "--grid", "leverage=2", "--paths", "2",
                              "--out", str(out)])
    assert res.exit_code == 2
    assert "holds both legs on one account" in " ".join(res.output.split())
    assert res.output.count("error:") == 1
    assert not out.exists()
