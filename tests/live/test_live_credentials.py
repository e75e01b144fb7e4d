"""API keys: environment over .env, names per exchange, values never shown."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundarb.live.ccxt.credentials import (
    Credentials,
    CredentialsError,
    env_names,
    load_credentials,
    require_credentials,
)

KEY, SECRET, PASSWORD = "FUNDARB_BINANCE_API_KEY", "FUNDARB_BINANCE_SECRET", "FUNDARB_BINANCE_PASSWORD"

# values long and odd enough that they cannot appear by chance in a message
secret_values = st.text(alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
                        min_size=12, max_size=40).map(lambda s: "Zq" + s)


def write_env(path, **values):
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_env_names_use_the_ccxt_id_in_capitals():
    assert env_names("binanceusdm") == ("FUNDARB_BINANCEUSDM_API_KEY", "FUNDARB_BINANCEUSDM_SECRET",
                                        "FUNDARB_BINANCEUSDM_PASSWORD")


def test_keys_are_read_under_the_exchange_names():
    creds = load_credentials("okx", env={"FUNDARB_OKX_API_KEY": "k1", "FUNDARB_OKX_SECRET": "s1",
                                         "FUNDARB_OKX_PASSWORD": "p1", KEY: "other", SECRET: "other"},
                             dotenv=None)
    assert (creds.api_key, creds.secret, creds.password) == ("k1", "s1", "p1")
    assert creds.exchange == "okx"


def test_environment_wins_over_dotenv(tmp_path):
    dotenv = write_env(tmp_path / ".env", **{KEY: "file-key", SECRET: "file-secret"})
    creds = load_credentials("binance", env={KEY: "env-key", SECRET: "env-secret"}, dotenv=dotenv)
    assert (creds.api_key, creds.secret) == ("env-key", "env-secret")


def test_dotenv_is_read_when_the_environment_lacks_the_key(tmp_path):
    dotenv = write_env(tmp_path / ".env", **{KEY: "file-key", SECRET: "file-secret", PASSWORD: "file-pw"})
    creds = load_credentials("binance", env={"UNRELATED": "x"}, dotenv=dotenv)
    assert (creds.api_key, creds.secret, creds.password) == ("file-key", "file-secret", "file-pw")


def test_environment_and_dotenv_merge_per_variable(tmp_path):
    dotenv = write_env(tmp_path / ".env", **{KEY: "file-key", SECRET: "file-secret"})
    creds = load_credentials("binance", env={SECRET: "env-secret"}, dotenv=dotenv)
    assert (creds.api_key, creds.secret) == ("file-key", "env-secret")


def test_missing_dotenv_file_is_not_an_error(tmp_path):
    creds = load_credentials("binance", env={}, dotenv=tmp_path / "absent.env")
    assert not creds.present
    assert (creds.api_key, creds.secret, creds.password) == ("", "", "")


def test_process_environment_is_the_default_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("FUNDARB_BYBIT_API_KEY", "os-key")
    monkeypatch.setenv("FUNDARB_BYBIT_SECRET", "os-secret")
    creds = load_credentials("bybit")
    assert (creds.api_key, creds.secret) == ("os-key", "os-secret")


@pytest.mark.parametrize(("present", "missing"), [(KEY, SECRET), (SECRET, KEY)])
@given(value=secret_values)
def test_half_a_pair_names_the_missing_variable_and_hides_the_value_given(present, missing, value):
    with pytest.raises(CredentialsError) as err:
        load_credentials("binance", env={present: value}, dotenv=None)
    assert missing in str(err.value)
    assert value not in str(err.value)


def test_half_pair_from_dotenv_is_refused_without_the_value(tmp_path):
    dotenv = write_env(tmp_path / ".env", **{SECRET: "Zqdotenvsecretvalue"})
    with pytest.raises(CredentialsError) as err:
        load_credentials("binance", env={}, dotenv=dotenv)
    assert KEY in str(err.value) and "Zqdotenvsecretvalue" not in str(err.value)


@given(secret_values, secret_values, secret_values)
def test_repr_and_str_never_show_key_secret_or_password(key, secret, password):
    creds = Credentials("binance", key, secret, password)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert key not in text and secret not in text and password not in text
        assert "binance" in text


def test_require_credentials_on_empty_names_both_variables():
    with pytest.raises(CredentialsError) as err:
        require_credentials(Credentials("binanceusdm"))
    assert "FUNDARB_BINANCEUSDM_API_KEY" in str(err.value)
    assert "FUNDARB_BINANCEUSDM_SECRET" in str(err.value)


def test_require_credentials_passes_a_full_pair_through():
    creds = load_credentials("binance", env={KEY: "k", SECRET: "s"}, dotenv=None)
    assert require_credentials(creds) is creds
    assert creds.present


def test_ccxt_fields_without_password_has_only_key_and_secret():
    assert Credentials("binance", "k", "s").ccxt_fields() == {"apiKey": "k", "secret": "s"}


def test_ccxt_fields_include_the_password_when_set():
    creds = load_credentials("okx", env={"FUNDARB_OKX_API_KEY": "k", "FUNDARB_OKX_SECRET": "s",
                                         "FUNDARB_OKX_PASSWORD": "p"}, dotenv=None)
    assert creds.ccxt_fields() == {"apiKey": "k", "secret": "s", "password": "p"}
