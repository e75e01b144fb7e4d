"""API keys from the environment or a ``.env`` file, never from configs.

Names: ``FUNDARB_<EXCHANGE>_API_KEY``, ``FUNDARB_<EXCHANGE>_SECRET`` and, for
venues that need one, ``FUNDARB_<EXCHANGE>_PASSWORD`` (``<EXCHANGE>`` is the
ccxt id in capitals: ``FUNDARB_BINANCEUSDM_API_KEY``). The environment wins
over ``.env``. The values never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs
from dotenv import dotenv_values

from fundarb.core.errors import FundarbError


class CredentialsError(FundarbError, ValueError):
    """Keys that are missing or unusable; the message names the variables, never their values."""


def _hidden(value: str) -> str:
    return "***" if value else "''"


@attrs.frozen(repr=False)
class Credentials:
    exchange: str
    api_key: str = attrs.field(default="", repr=False)
    secret: str = attrs.field(default="", repr=False)
    password: str = attrs.field(default="", repr=False)

    def __repr__(self) -> str:
        return f"Credentials({self.exchange}, api_key={_hidden(self.api_key)}, secret={_hidden(self.secret)})"

    __str__ = __repr__

    @property
    def present(self) -> bool:
        return bool(self.api_key and self.secret)

    def ccxt_fields(self) -> dict[str, str]:
        fields = {"apiKey": self.api_key, "secret": self.secret}
        if self.password:
            fields["password"] = self.password
        return fields


def env_names(exchange: str) -> tuple[str, str, str]:
    stem = f"FUNDARB_{exchange.upper()}_"
    return stem + "API_KEY", stem + "SECRET", stem + "PASSWORD"


def load_credentials(exchange: str, env: Mapping[str, str] | None = None,
                     dotenv: Path | None = Path(".env")) -> Credentials:
    """The keys of ``exchange``; empty fields when none are set (public data
    needs none; trading checks ``present`` and says which names to set)."""
    merged: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    merged.update(os.environ if env is None else env)
    key, secret, password = env_names(exchange)
    found = Credentials(exchange, merged.get(key, "").strip(), merged.get(secret, "").strip(),
                        merged.get(password, "").strip())
    if bool(found.api_key) != bool(found.secret):
        missing = secret if found.api_key else key
        raise CredentialsError(f"{exchange}: {missing} is not set (the other half of the key pair is)")
    return found


def require_credentials(creds: Credentials) -> Credentials:
    if not creds.present:
        key, secret, _ = env_names(creds.exchange)
        raise CredentialsError(
            f"{creds.exchange}: no API key: set {key} and {secret} in the environment or in .env")
    return creds
