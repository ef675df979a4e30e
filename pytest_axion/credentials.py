"""Endpoint credentials: where an API key comes from, and URLs with every secret taken out.

A protected deployment wants ``Authorization: Bearer <key>``. The key comes from the URL's user info
(``https://user:key@host/v1``, as some tools accept), else from ``AXION_API_KEY``, else from
``OPENAI_API_KEY`` (what OpenAI-compatible clients read). The URL that anything shows or writes
(header, report, baseline folder name, hardware id, model fingerprint) is the *public* one: no user
info, no query string, no fragment. A :class:`Secret` never prints itself. No pytest imports.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

KEY_VARIABLES = ("AXION_API_KEY", "OPENAI_API_KEY")   # read in this order
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Secret:
    """A credential that shows as ``***`` wherever it is printed, logged or pickled into a repr."""

    value: str
    source: str   # where it came from: an environment variable's name, or "the URL"

    def __repr__(self) -> str:
        return f"Secret(***, from {self.source})"

    __str__ = __repr__

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


def public_url(url: str) -> str:
    """``url`` without user info, query string or fragment: what may be shown and written."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"   # IPv6
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def api_key(url: str, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The key to send to ``url``: its user info's password (or user, if it has no password), else the first
    of :data:`KEY_VARIABLES` that is set and not empty; None when there is none."""
    parts = urllib.parse.urlsplit(url)
    from_url = parts.password or parts.username
    if from_url:
        return Secret(urllib.parse.unquote(from_url), "the URL")
    env = os.environ if environ is None else environ
    for name in KEY_VARIABLES:
        if env.get(name):
            return Secret(env[name], name)
    return None


def is_loopback(url: str) -> bool:
    """A URL of this machine, which no proxy should stand between (``HTTP_PROXY`` on a CI runner)."""
    return (urllib.parse.urlsplit(url).hostname or "") in LOOPBACK_HOSTS
