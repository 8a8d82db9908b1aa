"""Who may write and read: write keys, the read token, and the rate limits in front of them.

Write keys: ``Authorization: Bearer <key>`` or ``X-Ox-Write-Key: <key>``.
Read token: ``Authorization: Bearer <token>`` or the ``ox_read_token`` cookie. ``/?token=`` is only
exchanged for the cookie (and the page redirected to a URL without it), so a browser needs it once.

Browsers: a request whose ``Origin`` is not our own nor allowed is refused (403), and while bound to loopback a
``Host`` that does not name it is refused (421): a page elsewhere can neither post events here nor, by DNS
rebinding, read what is here.
"""

from __future__ import annotations

import hmac
import ipaddress
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

    def read_allowed(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """Whether a read (page, stats, metrics) may go ahead."""
        if self.read_token is None:
            return True
        token = self.read_token
        return any(_matches(p, token) for p in (_bearer(headers), cookies.get(COOKIE)))

    def token_matches(self, presented: str) -> bool:
        """Whether ``presented`` is the read token (False when there is none)."""
        return self.read_token is not None and _matches(presented, self.read_token)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """The Host and Origin checks, once a request, before anything else reads it."""

    def __init__(self, config: Config) -> None:
        self.check_host = config.loopback
        self.server_names = frozenset(n.lower() for n in config.server_names)
        self.origins = frozenset(o.rstrip("/").lower() for o in config.allow_origins)

    def refusal(self, scheme: str, headers: list[tuple[bytes, bytes]]) -> RequestError | None:
        """Why a request with these raw headers is refused, or None."""
        host = origin = None
        for name, value in headers:
            if name == b"host":
                host = value.decode("latin-1").lower()
            elif name == b"origin":
                origin = value.decode("latin-1").rstrip("/").lower()
        if self.check_host and not self._local_host(host or ""):
            return RequestError(421, "misdirected_request", "this collector answers only to its loopback names "
                                                            "(or --server-name)")
        if origin is not None and origin not in self.origins and origin != f"{scheme}://{host}":
            return RequestError(403, "origin_not_allowed", f"requests from {origin!r} are not allowed "
                                                           "(--allow-origin)")
        return None

    def _local_host(self, host: str) -> bool:
        # The name without its port: "[::1]:8080" is "::1", "localhost:8080" is "localhost".
        name = host[1:host.find("]")] if host.startswith("[") else host.partition(":")[0]
        return name in self.server_names or is_loopback(name)
