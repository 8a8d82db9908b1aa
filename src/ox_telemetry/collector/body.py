"""Reading a request body within the limits: 5 MiB as received, 20 MiB once gunzipped, a floor on its speed,
and a bound on the bytes all requests hold together.

The gzip limit is enforced while decompressing, a bounded piece at a time, so
a gzip bomb costs at most the limit in memory and time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

# zlib-ng: the same API and output as zlib, in less time (its crc32 uses the CPU's carry-less multiply);
# every event is gunzipped.
from zlib_ng import zlib_ng as zlib

from .errors import RequestError, retry_after

MAX_BODY = 5 * 1024 * 1024
MAX_DECODED = 20 * 1024 * 1024
#: A body gets this long, plus a second for every BODY_FLOOR bytes received, before it is answered 408.
BODY_GRACE_S = 10.0
BODY_FLOOR = 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_PIECE = 1024 * 1024
_GZIP_ERROR = cast("type[Exception]", zlib.error)  # the class (zlib-ng's stub types it as an instance)


def is_gzip(content_encoding: str | None) -> bool:
    """Whether the body is gzip; 415 for any encoding other than gzip or identity."""
    value = (content_encoding or "").strip().lower()
    if value in ("", "identity"):
        return False
    if value in ("gzip", "x-gzip"):
        return True
    raise RequestError(
        415, "unsupported_encoding",
        f"Content-Encoding {content_encoding!r} is not supported; send gzip or an uncompressed body",
    )


class InFlight:
    """Bytes that requests hold while they are read and parsed, all requests together, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def claim(self) -> Claim:
        """A request's share, empty; release it when the request is done."""
        return Claim(self)


class Claim:
    """What one request holds of an InFlight bound."""

    __slots__ = ("held", "pool")

    def __init__(self, pool: InFlight) -> None:
        self.pool = pool
        self.held = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes; RequestError 503 (with Retry-After) when all requests together would
        hold more than the bound."""
        pool = self.pool
        if pool.used + size > pool.limit:
            raise retry_after(503, "busy", "the collector holds too many request bytes; try again shortly", 1)
        pool.used += size
        self.held += size

    def release(self) -> None:
        """Give back everything held."""
        self.pool.used -= self.held
        self.held = 0


class Gunzip:
    """Incremental gunzip that refuses to produce more than ``limit`` bytes (several members allowed):
    what ``read_body`` does with a gzip body."""

    def __init__(self, limit: int, claim: Claim | None = None) -> None:
        self.limit = limit
        self.claim = claim
        self.size = 0
        self.parts: list[bytes] = []
        self._zlib = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data: bytes) -> None:
        """Decompress the next piece of the body; RequestError 400 for broken gzip, 413 past the limit."""
        try:
            while data:
                if self._zlib.eof:  # a new gzip member follows the last one
                    self._zlib = zlib.decompressobj(_GZIP_WBITS)
                # One byte over the limit is enough to know the body is too large. A piece at a time: one large
                # output is grown by doubling, and held about twice its size while it grows.
                out = self._zlib.decompress(data, min(_PIECE, self.limit - self.size + 1))
                self._add(out)
                data = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
        except _GZIP_ERROR as exc:
            raise RequestError(400, "invalid_gzip", f"body is not valid gzip: {exc}") from None

    def _add(self, out: bytes) -> None:
        self.size += len(out)
        if self.size > self.limit:
            raise RequestError(
                413, "decoded_too_large", f"body is over {self.limit} bytes after gzip decompression"
            )
        if self.claim is not None:
            self.claim.take(len(out))
        self.parts.append(out)

    def finish(self) -> bytes:
        """The whole body, decompressed; RequestError 400 when the gzip stream stopped short."""
        if not self._zlib.eof:
            raise RequestError(400, "invalid_gzip", "body is not valid gzip: it ends in the middle of the stream")
        return b"".join(self.parts)


async def read_body(
    chunks: AsyncIterator[bytes],
    content_length: str | None,
    gzip: bool,
    claim: Claim,
    grace_s: float = BODY_GRACE_S,
    max_body: int = MAX_BODY,
    max_decoded: int = MAX_DECODED,
) -> bytes:
    """The body, decompressed and held in ``claim`` (the joined copy too); RequestError 413 past a limit, 400 for
    broken gzip, 408 when it arrives slower than ``grace_s`` plus a second a BODY_FLOOR bytes, 503 past the
    in-flight bound."""
    deadline = _Deadline(grace_s)
    try:
        return await _read_body(chunks, content_length, gzip, claim, deadline, max_body, max_decoded)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        uncancel = getattr(deadline.task, "uncancel", None)  # 3.11+: the cancel was ours, and is handled here
        if uncancel is not None:
            uncancel()
        raise RequestError(408, "body_timeout", f"the body arrived slower than {BODY_FLOOR} bytes a second",
                           {"Connection": "close"}) from None
    finally:
        deadline.stop()


class _Deadline:
    """Cancels the current task at a time that can be moved (asyncio.timeout, as Python 3.10 has none)."""

    def __init__(self, grace_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.start = self.loop.time()
        self.grace_s = grace_s
        self.expired = False
        self._handle = self.loop.call_at(self.start + grace_s, self._expire)

    def received(self, size: int) -> None:
        """``size`` bytes have arrived in all: the body gets its grace plus a second a BODY_FLOOR bytes."""
        self._handle.cancel()
        self._handle = self.loop.call_at(self.start + self.grace_s + size / BODY_FLOOR, self._expire)

    def stop(self) -> None:
        """The body is read (or refused): nothing is cancelled any more."""
        self._handle.cancel()

    def _expire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()


async def _read_body(chunks: AsyncIterator[bytes], content_length: str | None, gzip: bool, claim: Claim,
                     deadline: _Deadline, max_body: int, max_decoded: int) -> bytes:
    too_large = RequestError(413, "body_too_large", f"body is over {max_body} bytes")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, "invalid_length", "Content-Length is not a number") from None
        if declared > max_body:
            raise too_large
    gunzip = Gunzip(max_decoded, claim) if gzip else None
    received = 0
    parts: list[bytes] = []
    async for chunk in chunks:
        received += len(chunk)
        if received > max_body:
            raise too_large
        claim.take(len(chunk))
        if gunzip is not None:
            gunzip.feed(chunk)
        else:
            parts.append(chunk)
        deadline.received(received)
    body = gunzip.finish() if gunzip is not None else b"".join(parts)
    claim.take(len(body))
    return body
