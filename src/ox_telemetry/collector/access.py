"""Who may write and read: write keys, the read token, and the rate limits in front of them.

Write keys: ``Authorization: Bearer <key>`` or ``X-Ox-Write-Key: <key>``.
Read token: ``Authorization: Bearer <token>``, the ``ox_read_token`` cookie, or
``?token=`` (the page sets the cookie from it, so a browser needs it once).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from .config import Config
from .errors import RequestError, retry_after
from .ratelimit import TokenBuckets

COOKIE = "ox_read_token"


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def _matches(presented: str | None, secret: str) -> bool:
    # Header text arrives as latin-1; compare bytes, in constant time.
    return presented is not None and hmac.compare_digest(presented.encode("latin-1", "replace"), secret.encode())


class Access:
    """Checks made before a request's body is read."""

    def __init__(self, config: Config) -> None:
        self.write_keys = tuple(sorted(config.write_keys))
        self.read_token = config.read_token
        self.by_address = TokenBuckets(config.address_rate, config.address_burst) if config.address_rate else None
        self.by_key = TokenBuckets(config.key_rate, config.key_burst) if config.key_rate else None

    def admit_write(self, headers: Mapping[str, str], address: str) -> None:
        """RequestError 429 (address over its rate), 401 (no known key) or 429 (key over its rate)."""
        if self.by_address is not None:
            wait = self.by_address.take(address)
            if wait:
                raise retry_after(429, "rate_limited", "too many requests from this address", wait)
        if not self.write_keys:
            return
        presented = headers.get("x-ox-write-key") or _bearer(headers)
        key = next((k for k in self.write_keys if _matches(presented, k)), None)
        if key is None:
            raise RequestError(
                401, "unauthorized", "a known write key is required (Authorization: Bearer <key> or X-Ox-Write-Key)",
                {"WWW-Authenticate": 'Bearer realm="ox-telemetry"'},
            )
        if self.by_key is not None:
            wait = self.by_key.take(key)
            if wait:
                raise retry_after(429, "rate_limited", "too many requests with this write key", wait)

    def read_allowed(self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether a read (page, stats, metrics) may go ahead."""
        if self.read_token is None:
            return True
        token = self.read_token
        return any(_matches(p, token) for p in (_bearer(headers), cookies.get(COOKIE), query.get("token")))
