"""How bytes reach an endpoint: a one-method interface and its standard-library default.

A transport is any object with ``post(url, body, headers, timeout)`` returning
something with ``status`` and ``headers``; raising :class:`OSError` means the
network failed. Only sending code imports this module: the HTTP stack is
heavy to import, so the CLI process itself never loads it unless a custom
transport is in use. The one module in ``src/`` that imports an HTTP client
library (a test holds it to that): every sender goes through
:mod:`ox_telemetry.sending`, which uses a transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Response(Protocol):
    """What a transport returns."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class Transport(Protocol):
    """Sends one request body to an endpoint."""

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        """POST ``body``; raise OSError when the network fails."""
        ...


#: The most of an answer's body a transport reads (a sender needs a small JSON answer at most).
MAX_REPLY_BYTES = 64 * 1024


class HTTPResponse:
    """A status, headers (names kept as sent; look them up with :func:`header`) and the body's first bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"HTTPResponse(status={self.status})"


def header(response: Response, name: str) -> str | None:
    """A response header by case-insensitive name (custom transports may return a plain dict)."""
    headers = response.headers
    try:
        value = headers.get(name)
    except Exception:
        value = None
    if value is None:
        lowered = name.lower()
        try:
            value = next((v for k, v in headers.items() if k.lower() == lowered), None)
        except Exception:
            return None
    return value if isinstance(value, str) else None


class UrllibTransport:
    """The default transport: :mod:`urllib.request` (honours proxy environment variables)."""

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> HTTPResponse:
        """POST and return the status; an HTTP error status is a response, not an exception."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                body = reply.read(MAX_REPLY_BYTES)  # also drains a little so the connection closes cleanly
                return HTTPResponse(reply.status, dict(reply.headers.items()), body)
        except urllib.error.HTTPError as err:
            return HTTPResponse(err.code, dict(err.headers.items()) if err.headers else {})
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, OSError):
                raise reason from None
            raise OSError(str(reason)) from None
        except (ValueError, TimeoutError) as err:  # bad URL, read timeout
            raise OSError(str(err)) from None
