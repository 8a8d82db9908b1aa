"""The one way a body leaves the machine: POST it, classify the answer, retry politely.

Every sender goes through here: a CLI queue's delivery run (the detached
uploader, a client's thread with a host transport, ``ox-telemetry flush``, the
daemon's hand-offs), the daemon's spool sender and ``ox-telemetry demo``. So
"which statuses retry", "gzip unless the endpoint refused it", "never sooner
than Retry-After" and "how a network error reads" are decided once.

Retries use exponential backoff with full jitter (sleep a random time between
zero and ``base * 2**attempt``, capped), never sooner than the server's
``Retry-After``. Imported only by sending processes: it loads the transport.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from .budget import RequestBudget
from .transport import Response, Transport, header

log = logging.getLogger("ox_telemetry")

#: Statuses that mean "not now": the request may succeed later. Every other
#: 4xx means the endpoint will never accept that body.
RETRYABLE_STATUSES = frozenset({408, 429})

# What became of one POST (:attr:`Reply.kind`).
DELIVERED = "delivered"  # 2xx
RETRY = "retry"  # 408, 429, 5xx: the same body may be accepted later
REFUSED = "refused"  # any other status: this body will never be accepted
NETWORK = "network"  # no answer: the network (or the transport) failed
NOT_SENT = "not_sent"  # the user's request budget for the endpoint is spent: no request made


def is_success(status: int) -> bool:
    """Any 2xx is delivered."""
    return 200 <= status < 300


def is_retryable(status: int) -> bool:
    """408, 429 and every 5xx are worth retrying; other statuses are final."""
    return status in RETRYABLE_STATUSES or 500 <= status < 600


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int, base: float, cap: float, retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter delay before retry number ``attempt`` (0-based), never below ``retry_after``."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    delay = (rng or random).uniform(0, ceiling)
    return delay if retry_after is None else max(delay, retry_after)


def network_error(exc: BaseException) -> str:
    """How a failed request reads in states and status output: the exception's class only (no host, no path)."""
    return f"network: {exc.__class__.__name__}"


class Reply:
    """One POST's outcome: its :data:`kind`, the status, the text a status report shows, Retry-After."""

    __slots__ = ("body", "error", "kind", "response", "retry_after", "status")

    def __init__(self, kind: str, error: str, status: int | None = None, retry_after: float | None = None,
                 response: Response | None = None) -> None:
        self.kind = kind
        self.error = error  # "HTTP 503", "network: ConnectionRefusedError"
        self.status = status
        self.retry_after = retry_after
        self.response = response
        body = getattr(response, "body", b"")  # the default transport keeps the answer's first bytes
        self.body: bytes = body if isinstance(body, bytes) else b""

    def header(self, name: str) -> str | None:
        """A header of the answer (None without one)."""
        return None if self.response is None else header(self.response, name)

    def __repr__(self) -> str:
        return f"Reply({self.kind}, {self.error!r})"


class Endpoint:
    """One endpoint as a sender sees it: where, how, whether it refused gzip, and the user's budget for it.

    ``budget``: the per-user request budget (see :mod:`ox_telemetry.budget`),
    spent before every request; None for a sender that is alone per user and
    keeps its own backoff (the daemon's spool) or is no CLI's (``demo``).
    """

    def __init__(
        self, transport: Transport, url: str, user_agent: str, timeout: float,
        budget: RequestBudget | None = None, plain: bool = False, headers: dict[str, str] | None = None,
    ) -> None:
        self.transport, self.url, self.timeout, self.budget = transport, url, timeout, budget
        self.plain = plain  # the endpoint answered 415 to gzip: bodies go uncompressed from now on
        self.headers = {**(headers or {}), "Content-Type": "application/json", "User-Agent": user_agent}
        self.requests = 0
        self.last_answer = ""  # of the last request made: "HTTP 503", "network: ConnectionRefusedError"

    def post(self, body: bytes) -> Reply:
        """POST a JSON ``body`` once (twice after a 415 to gzip) and classify the answer; never raises."""
        while True:
            if self.budget is not None:
                wait = self.budget.take()
                if wait:
                    return Reply(NOT_SENT, "not sent: the endpoint's request budget is spent", retry_after=wait)
            compress = not self.plain
            reply = self._post_once(body, compress)
            self.last_answer = reply.error
            if reply.status is not None and reply.kind != RETRY and self.budget is not None:
                self.budget.answered()
            if reply.status == 415 and compress:
                self.plain = True
                continue
            return reply

    def _post_once(self, body: bytes, compress: bool) -> Reply:
        headers = dict(self.headers)
        if compress:
            import gzip  # only the sending processes pay for it

            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        self.requests += 1
        try:
            response = self.transport.post(self.url, body, headers, self.timeout)
            status = int(response.status)
        except Exception as exc:  # OSError is the network; anything else is a broken transport
            log.debug("POST to %s failed: %r", self.url, exc)
            return Reply(NETWORK, network_error(exc))
        if is_success(status):
            kind = DELIVERED
        elif is_retryable(status):
            kind = RETRY
        else:
            kind = REFUSED
        return Reply(kind, f"HTTP {status}", status, parse_retry_after(header(response, "Retry-After")), response)


class Backoff:
    """Failed attempts in a row, and the delay before the next one."""

    __slots__ = ("attempt", "base", "cap")

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self, retry_after: float | None) -> float:
        """The delay before the next attempt after one more failure (see :func:`backoff_delay`)."""
        delay = backoff_delay(self.attempt, self.base, self.cap, retry_after)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """An attempt got through: the next failure starts from ``base`` again."""
        self.attempt = 0


def worth_retrying(reply: Reply) -> bool:
    """This protocol's rule: a network error, 408, 429 or any 5xx may succeed later."""
    return reply.kind in (RETRY, NETWORK)


def send_with_retries(
    endpoint: Endpoint, body: bytes, backoff: Backoff, deadline: float, wait: Callable[[float], bool],
    retryable: Callable[[Reply], bool] = worth_retrying, on_retry: Callable[[], None] | None = None,
) -> tuple[Reply, bool]:
    """POST ``body`` until it is delivered or refused, the budget is spent or the next retry would pass ``deadline``.

    ``deadline`` is a :func:`time.monotonic` time; ``wait(seconds)`` sleeps
    and returns True when the sender must stop now; ``retryable`` says which
    replies are tried again (another protocol has other rules); ``on_retry`` is
    told of each retry. Returns the last reply and whether ``wait`` stopped the loop.
    """
    while True:
        reply = endpoint.post(body)
        if not retryable(reply):
            return reply, False
        delay = backoff.next_delay(reply.retry_after)
        if time.monotonic() + delay > deadline:
            return reply, False
        if wait(delay):
            return reply, True
        if on_retry is not None:
            on_retry()


def sleep(seconds: float) -> bool:
    """A ``wait`` for :func:`send_with_retries` that never asks to stop."""
    time.sleep(seconds)
    return False
