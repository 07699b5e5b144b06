"""Passwords out of everything tc logs: URLs, configs and texts are masked before they become a param, a tag, a
run's description, `config.json` or a sweep's files.

A database or tracking URL may carry a password (`postgresql+psycopg2://tc:pw@db/optuna`,
`postgresql://db/optuna?password=pw`, a libpq `password=pw` setting). tc logs such values in a few places (the
sweep run's `tc.storage` tag and `sweep_config.json`, every run's `config.json` and params, descriptions, error
tags); each goes through `mask_text` or `mask_config` first, so the password never reaches the tracking server.
What `mlflow run -P` logs, MLflow logs before tc starts: keep passwords out of `-P` (docs/scaling.md:
`PGPASSWORD` or `~/.pgpass` for PostgreSQL, `MLFLOW_TRACKING_PASSWORD` for MLflow).

Pure: strings in, strings out.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://user:password@host: the password runs to the last "@" before a blank (a raw "@" or quote in a password,
# which SQLAlchemy accepts, is still masked whole; a later "@" in the path or a quoted text right after the URL
# over-masks, which is the safe side). User names are kept: they are no secret, and a reader needs them to tell
# two setups apart.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):(?P<secret>\S*)@")
# ?password=..., &password=..., libpq's "password=..." settings (also passwd, pwd, and any name ending so:
# sslpassword, PGPASSWORD, mlflow_tracking_password), any case; a libpq value may be quoted ('a b')
_SETTING_PASSWORD = re.compile(
    r"(?P<head>(?i:\b\w*(?:password|passwd|pwd))\s*=\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^&;\s'\"]+)"
)


def mask_text(text: str) -> str:
    """`text` with every URL password (`scheme://user:***@host`) and every `password=` setting masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _SETTING_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def mask_url(url: str) -> str:
    """`scheme://user:password@host/...` -> `scheme://user:***@host/...` (and `?password=` masked); any other
    string comes back unchanged."""
    return mask_text(url)


def has_secret(text: str) -> bool:
    """Whether `text` carries a password that `mask_text` would mask."""
    return mask_text(text) != text


def mask_config(value: Any) -> Any:
    """A config (as `dataclasses.asdict` gives it: dicts, lists, tuples, strings, numbers) with every string,
    keys included, passed through `mask_text`; the same shape, a new object."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {mask_config(k): mask_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_config(v) for v in value)
    return value
