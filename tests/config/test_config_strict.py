"""Config fields are strictly typed and ranged: a boolean is not a number, a
number is not a boolean, a float is not a whole number, a string is neither;
every rate, fee, size and time has a plausible range; and every bad config,
down to a file that cannot be read or a value nested thousands deep, is one
ConfigError line naming the file and the field."""

from __future__ import annotations

import json
import math
import re
import tempfile
import tomllib
import typing
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fundarb import config
from fundarb.config import (
    AlertSettings,
    Config,
    ConfigError,
    LiveSettings,
    MarketDataSettings,
    RunnerSettings,
    Scenario,
    StructureConfig,
    VenueConfig,
    config_hash,
    from_dict,
    load,
)

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
BASELINE_HASH = "dfe6e84d437443ddca2262cad18b64c79392a847e93b7e84b315dc7ede0de8d6"  # as every shipped report says
OPTIONAL = ("scenario", "live", "alerts", "runner", "market_data", "structure", "rotation")


def baseline_raw() -> dict:
    return tomllib.loads(BASELINE.read_text())


def with_value(key: str, value) -> dict:
    """The baseline with ``key`` ("seed", "spot.taker_fee", "runner.heartbeat_seconds") set to ``value``."""
    raw = baseline_raw()
    if "." not in key:
        raw[key] = value
        return raw
    section, field = key.split(".")
    if section in OPTIONAL and section not in raw:
        raw[section] = {"description": "x"} if section == "scenario" else {}
    raw[section][field] = value
    return raw


def refused(raw: dict, source: str = "bad.toml") -> str:
    with pytest.raises(ConfigError) as err:
        from_dict(raw, source)
    msg = str(err.value)
    assert msg.startswith(f"{source}: ") and "\n" not in msg, msg
    return msg


# --- no bool-to-float, no number-to-bool, no float-to-int, no string-to-number ---------------

@pytest.mark.parametrize("key, value", [
    ("spot.taker_fee", True),
    ("perp.latency_sigma", True),
    ("capital", True),
    ("strategy.notional", True),
    ("transfer.fee", False),
    ("data.max_price_gap_hours", True),
    ("live.max_spread_bp", True),
])
def test_a_boolean_is_not_a_number(key, value):
    msg = refused(with_value(key, value))
    assert f"{key} must be a number" in msg and f"got {value!r}" in msg


def test_maintenance_margin_rate_is_still_refused_as_no_longer_a_setting_whatever_its_type():
    raw = baseline_raw()
    raw["perp"]["maintenance_margin_rate"] = True
    assert "perp.maintenance_margin_rate is no longer a setting" in refused(raw)


@pytest.mark.parametrize("key, value", [
    ("risk.auto_rebalance", 7),
    ("risk.auto_rebalance", 1),
    ("risk.flatten_on_kill", "yes"),
    ("strategy.allow_reverse", 0),
    ("strategy.allow_reverse", 0.0),
])
def test_a_boolean_field_takes_only_true_or_false(key, value):
    msg = refused(with_value(key, value))
    assert f"{key} must be true or false, got {value!r}" in msg


@pytest.mark.parametrize("key, value, says", [
    ("seed", 1.5, "seed must be a whole number >= 0, got 1.5"),
    ("seed", 7.0, "seed must be a whole number >= 0, got 7.0"),
    ("seed", True, "seed must be a whole number >= 0, got True"),
    ("seed", "3", "seed must be a whole number >= 0, got '3'"),
    ("strategy.signal_settlements", 2.5, "strategy.signal_settlements must be a whole number >= 1, got 2.5"),
    ("alerts.max_per_hour", 20.0, "alerts.max_per_hour must be a whole number >= 1, got 20.0"),
    ("capital", "100000", "capital must be a number"),
    ("spot.taker_fee", "0.001", "spot.taker_fee must be a number"),
    ("name", 5, "name must be a string"),
    ("perp.exchange", ["binanceusdm"], "perp.exchange must be a string"),
])
def test_whole_numbers_numbers_and_strings_are_not_converted(key, value, says):
    assert says in refused(with_value(key, value))


def test_an_integer_is_a_fine_float_and_a_toml_date_a_fine_date():
    raw = with_value("capital", 100_000)
    raw["data"]["start"] = tomllib.loads("d = 2021-07-01")["d"]
    cfg = from_dict(raw)
    assert cfg.capital == 100_000.0 and isinstance(cfg.capital, float) and cfg.data.start == "2021-07-01"
    assert config_hash(cfg) == BASELINE_HASH


# --- ranges --------------------------------------------------------------------------------

def outside(rule) -> list:
    """Values of the rule's type just outside each of its bounds."""
    step = 1 if rule.kind is int else None
    out = []
    if rule.lo is not None:
        out.append(rule.lo if rule.lo_open else (rule.lo - step if step else rule.lo - max(abs(rule.lo) * 0.01, 1e-9)))
    if rule.hi is not None:
        out.append(rule.hi if rule.hi_open else (rule.hi + step if step else rule.hi + max(abs(rule.hi) * 0.01, 1e-9)))
    return out


def test_every_numeric_and_boolean_field_of_every_section_has_a_rule():
    rules = config.field_rules()

    def leaves(cls, prefix):
        for f in attrs.fields(cls):
            typ = f.type
            tables = [t for t in getattr(typ, "__args__", ()) if attrs.has(t)]
            if typing.get_origin(typ) is tuple and tables:  # a list of tables of a section ruled as [perp]
                assert tables == [VenueConfig], f.name
                continue
            inner = next((t for t in getattr(typ, "__args__", ()) if attrs.has(t)), None)
            if attrs.has(typ) or inner is not None:
                yield from leaves(inner or typ, f"{f.name}.")
            elif typ in (int, float, bool, "int", "float", "bool"):
                yield prefix + f.name

    missing = [k for k in leaves(Config, "") if k not in rules]
    assert not missing
    assert {"seed", "spot.taker_fee", "perp.taker_fee", "strategy.entry_apr", "risk.max_leverage",
            "market_data.confirm_count", "runner.kill_poll_seconds"} <= set(rules)


def test_every_bound_refuses_the_value_just_past_it_naming_the_field():
    checked = 0
    for key, rule in config.field_rules().items():
        for value in outside(rule):
            msg = refused(with_value(key, value))
            assert f"{key} must be " in msg and ";" not in msg, msg
            checked += 1
    assert checked > 60


@pytest.mark.parametrize("key, value", [
    ("spot.taker_fee", 16),
    ("spot.taker_fee", 0.021),
    ("perp.maker_fee", -0.0011),
    ("perp.half_spread_bp_max", 250.0),
    ("spot.impact_bp_per_btc", 1e4),
    ("perp.latency_ms_median", 1e9),
    ("spot.latency_sigma", 30.0),
    ("perp.liquidation_fee_rate", 1.25),
    ("perp.max_venue_leverage", 0.0),
    ("live.max_slippage_bp", 5000.0),
])
def test_fees_spreads_and_latency_out_of_any_venue_range_are_refused(key, value):
    assert f"{key} must be " in refused(with_value(key, value))


def test_the_fee_range_takes_a_maker_rebate_and_the_dearest_retail_taker():
    for fee in (-0.001, -0.00025, 0.0, 0.012, 0.02):
        cfg = from_dict(with_value("perp.maker_fee", fee))
        assert cfg.perp.maker_fee == fee
        assert from_dict(with_value("spot.taker_fee", fee)).spot.taker_fee == fee


@pytest.mark.parametrize("key, value, says", [
    ("strategy.entry_apr", 6, "strategy.entry_apr must be <= 1 (a fraction of a year: 0.06 means 6% APR), got 6"),
    ("strategy.exit_apr", -5, "strategy.exit_apr must be >= -1 (a fraction of a year: 0.06 means 6% APR), got -5"),
    ("collateral_rate", 3, "collateral_rate must be <= 1 (a fraction of a year: 0.03 means 3%), got 3"),
    ("spot.borrow_rate_annual", 5, "spot.borrow_rate_annual must be <= 2 (a fraction of a year: 0.05 means 5% APR), got 5"),
    ("scenario.funding_shift_apr", -15, "scenario.funding_shift_apr must be >= -1 (a fraction of a year: "
                                        "-0.15 means -15% APR), got -15"),
    ("strategy.target_profit", 15, "strategy.target_profit must be <= 1 (a fraction of notional: 0.10 means 10%), got 15"),
])
def test_a_percent_typed_as_a_fraction_is_refused_with_a_hint(key, value, says):
    assert refused(with_value(key, value)) == f"bad.toml: {says}"


@pytest.mark.parametrize("seed, says", [
    (-1, "seed must be a whole number >= 0, got -1"),
    (2**63, "seed must be < 2**63, got 9223372036854775808"),
    (10**30, "seed must be < 2**63"),
])
def test_a_seed_numpy_cannot_take_is_one_line(seed, says, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(BASELINE.read_text().replace("seed = 7", f"seed = {seed}"))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value) and "\n" not in str(err.value)
    assert load(BASELINE).seed == 7
    assert from_dict(with_value("seed", 2**63 - 1)).seed == 2**63 - 1


# --- files that cannot be read and values that cannot be walked ---------------------------------

def deep(n: int, inner: str = "1") -> str:
    return "[" * n + inner + "]" * n


@pytest.mark.parametrize("depth", [3000, 100_000])
def test_a_value_nested_thousands_deep_is_one_line(depth, tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text(f"x = {deep(depth)}\n" + BASELINE.read_text())
    with pytest.raises(ConfigError) as err:
        load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and "nested" in msg


def test_a_value_nested_deep_but_parseable_is_named_without_walking_it(tmp_path):
    nested: list = [1]
    for _ in range(5000):
        nested = [nested]
    for key in ("spot.taker_fee", "name", "risk.auto_rebalance", "seed"):
        assert key in refused(with_value(key, nested))
    raw = baseline_raw()
    raw["spot"] = nested
    assert "spot must be a [spot] section (a table), got an array" in refused(raw)
    path = tmp_path / "d.toml"
    path.write_text(BASELINE.read_text().replace("taker_fee = 0.001", f"taker_fee = {deep(300)}"))
    with pytest.raises(ConfigError, match=r"spot\.taker_fee must be a number"):
        load(path)


def test_a_file_that_is_not_utf8_is_one_line_naming_path_and_cause(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASELINE.read_bytes().replace(b'name = "spot_perp"', b'name = "spot_p\xefrp"'))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: ") and "UTF-8" in str(err.value) and "\n" not in str(err.value)


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(err.value) == f"{tmp_path}: a folder, not a config file"


def test_a_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "secret.toml"
    path.write_text(BASELINE.read_text())
    real = Path.read_bytes

    def denied(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: cannot be read: Permission denied"


# --- any mutation of the shipped baseline: a Config or one ConfigError line ----------------------

class Deep:
    def __init__(self, n: int):
        self.n = n

    def __repr__(self):
        return f"Deep({self.n})"

    def value(self) -> list:
        nested: list = [1]
        for _ in range(self.n):
            nested = [nested]
        return nested


def lit(v) -> str:
    """A TOML literal (inline) for v."""
    if isinstance(v, Deep):
        return deep(v.n)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {lit(x)}" for k, x in v.items()) + "}"


def toml_text(raw: dict) -> str:
    top = [f"{k} = {lit(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{f} = {lit(x)}" for f, x in v.items()) for k, v in raw.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def mutable_keys() -> list[str]:
    raw = baseline_raw()
    keys = [f"{s}.{f}" if isinstance(v, dict) else s for s, v in raw.items() for f in (v if isinstance(v, dict) else [None])]
    keys = [k.removesuffix(".None") for k in keys]
    sections = dict(zip(OPTIONAL, (Scenario, LiveSettings, AlertSettings, RunnerSettings, MarketDataSettings,
                                   StructureConfig)))
    return keys + [f"{s}.{f.name}" for s, cls in sections.items() for f in attrs.fields(cls)]


scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(-2**70, 2**70),
    st.sampled_from([-1, 0, 1, 2**63 - 1, 2**63, -2**63, 10**30, 10**400]),
    st.floats(),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, -0.0, 6.0, 0.06]),
    st.text(max_size=12),
)
values = st.one_of(
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3), max_leaves=6),
    st.integers(1, 3000).map(Deep),
)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(mutable_keys()), value=values)
def test_any_one_field_mutated_loads_or_is_one_config_error_line(scratch, key, value):
    raw = with_value(key, value)
    path = scratch / "mutated.toml"
    path.write_text(toml_text(raw))
    try:
        cfg = load(path)
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith(f"{path}: "), msg
        if "not valid TOML" not in msg:
            assert any(word in msg for word in key.split(".")), msg
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=100, deadline=None)
@given(section=st.sampled_from(["spot", "perp", "data", "strategy", "risk", "transfer", *OPTIONAL]), value=values)
def test_any_section_replaced_by_any_value_is_one_config_error_line(section, value):
    raw = baseline_raw()
    raw[section] = value.value() if isinstance(value, Deep) else value
    try:
        from_dict(raw, "m.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("m.toml: ") and section in str(exc), str(exc)


# --- the command line: exit 2, one error line, no traceback ------------------------------------

@pytest.mark.parametrize("replace, extra", [
    (("taker_fee = 0.001", "taker_fee = 16"), []),
    (("seed = 7", "seed = -1"), []),
    (("entry_apr = 0.04", "entry_apr = 6"), []),
    (("auto_rebalance = true", "auto_rebalance = 7"), []),
    (("seed = 7", f"seed = 7\nx = {deep(3000)}"), []),
    (None, ["--seed", "-1"]),
])
def test_backtest_of_a_bad_config_exits_2_with_one_error_line(replace, extra, tmp_path):
    from fundarb.cli.main import app

    path = tmp_path / "bad.toml"
    text = BASELINE.read_text()
    path.write_text(text.replace(*replace) if replace else text)
    res = CliRunner().invoke(app, ["backtest", str(path), *extra, "--out", str(tmp_path / "o"), "-q"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert str(path) in lines[0] or "seed" in lines[0], res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


# --- what ships still loads, unchanged --------------------------------------------------------

def test_every_shipped_config_and_recording_still_loads():
    from fundarb.replay.parse import load_recording

    sims = sorted((ROOT / "sims").glob("*.toml"))
    assert len(sims) >= 6
    for path in sims:
        assert isinstance(load(path), Config)
    assert config_hash(load(BASELINE)) == BASELINE_HASH
    for folder in sorted(p.parent for p in (ROOT / "recordings").glob("*/recording.toml")):
        rec = load_recording(folder)
        assert isinstance(load(ROOT / "sims" / rec.config), Config)


def test_the_doc_lists_every_field_with_its_range():
    doc = (ROOT / "docs" / "config.md").read_text()
    rows = {}
    for line in doc.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            for name in re.findall(r"`(\w+)`", first):
                rows[name] = line
    for key, rule in config.field_rules().items():
        field = key.split(".")[-1]
        assert field in rows, field
        assert f"| {rule.text()} |" in rows[field], (key, rule.text(), rows[field])
