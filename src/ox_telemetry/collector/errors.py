"""Errors that end a request with a status code and a JSON body naming the problem."""

from __future__ import annotations


class RequestError(Exception):
    """A request the collector answers with ``status`` and ``{"error": message, "code": code}``.

    ``code`` is a short stable name, also used as the metrics label.
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def retry_after(status: int, code: str, message: str, seconds: float) -> RequestError:
    """A 429 or 503 telling the sender when to try again (whole seconds, at least one)."""
    return RequestError(status, code, message, {"Retry-After": str(max(1, int(seconds + 0.999)))})
