"""The daemon's spool sender: the spool to the ``/tevents`` endpoint (CONTRACT.md section 3), on schedule.

Batches of at most 500 events, gzip bodies (see :mod:`ox_telemetry.sending`), exponential backoff with full
jitter (cap 10 minutes) on network errors, 408, 429 and 5xx, never sooner
than ``Retry-After``; any other 4xx drops that batch (counted as
``rejected``). When the user has opted out (CONTRACT.md section 4, the
per-user rules; read again before every send) or chose local mode, nothing is
sent and what is spooled is deleted (counted as ``opted_out``). A response's
``X-SageOx-Interval`` (a Go duration) sets the send interval, clamped to 10 s … 24 h.

The HTTP request runs in a daemon thread so the event loop keeps taking
events, and so a request hanging on a dead network never delays the
process's exit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from .. import __version__, _jsonlite, _time, consent, otlp, sending
from .._jsonlite import MAX_DEPTH
from ..scrub import scrub_value
from ..settings import go_duration
from ..transport import Transport
from ..wire import encode_upload
from .settings import MAX_SERVER_INTERVAL, MIN_SERVER_INTERVAL, Settings
from .spool import Spool

log = logging.getLogger("ox_telemetry.daemon")
T = TypeVar("T")

def server_interval(value: str | None) -> float | None:
    """The send interval an ``X-SageOx-Interval`` header asks for, clamped to 10 s … 24 h; None when absent or bad."""
    if value is None:
        return None
    seconds = go_duration(value)
    if seconds is None:
        return None
    return min(MAX_SERVER_INTERVAL, max(MIN_SERVER_INTERVAL, seconds))


def spool_events(lines: list[bytes]) -> list[dict[str, Any]]:
    """The upload events (``uuid, ts, tslocal, event, props``, props scrubbed) of spool ``lines``; malformed lines
    are skipped. The one place prop values are scrubbed: for uploads and for OpenTelemetry export alike."""
    events = []
    for line in lines:
        try:
            # One level more than a message may have: the spool line wraps it.
            item = _jsonlite.loads(line, MAX_DEPTH + 1)
            payload = item["msg"]["payload"]
            props = payload.get("props")
            events.append({
                "uuid": item["uuid"], "ts": item["ts"], "tslocal": item["tslocal"],
                "event": payload["event"], "props": scrub_value(props) if isinstance(props, dict) else {},
            })
        except Exception as exc:  # whatever one line holds, it costs only itself
            log.debug("skipping a malformed spool line: %r", exc)
    return events


def build_body(clientid: str, lines: list[bytes]) -> tuple[bytes, int]:
    """The upload body for spool ``lines`` and how many events it holds (malformed lines are skipped)."""
    events = spool_events(lines)
    return encode_upload(clientid, events), len(events)


def otlp_records(clientid: str, lines: list[bytes]) -> list[otlp.Record]:
    """The OpenTelemetry log records of spool ``lines`` (see :mod:`ox_telemetry.otlp`): received at ``ts``."""
    return [otlp.daemon_record(e["event"], e["props"], uuid=e["uuid"], client_id=clientid, tslocal=e["tslocal"],
                               time_us=e["ts"] * 1000, observed_us=e["ts"] * 1000) for e in spool_events(lines)]


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread (unlike ``asyncio.to_thread``, never waited for at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def work() -> None:
        try:
            result: Any = fn()
            ok = True
        except BaseException as exc:
            result, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:
            pass  # the loop closed while we worked: nobody waits any more

    threading.Thread(target=work, name="ox-telemetry-daemon-io", daemon=True).start()
    return await future


class SpoolSender:
    """Sends the spool on schedule, early when events pile up, and on request; keeps the delivery counters."""

    def __init__(self, spool: Spool, transport: Transport, url: str, clientid: str, settings: Settings) -> None:
        self.spool = spool
        self.url = url
        self.clientid = clientid
        self.settings = settings
        self.endpoint = sending.Endpoint(transport, url, f"ox-telemetry-daemon/{__version__}", settings.timeout)
        self.interval = settings.interval
        self.delivered = 0
        self.dropped: dict[str, int] = {"rejected": 0, "malformed": 0, "opted_out": 0}
        self.last_error = ""
        self.last_success = ""
        self._backoff = sending.Backoff(settings.base, settings.cap)
        self._next_attempt = 0.0  # monotonic time before which only a flush sends
        self._next_regular = time.monotonic() + self.interval
        self._last_early = float("-inf")
        self._sleep_until = float("inf")  # when the send loop wakes up by itself
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False

    # -- triggers --------------------------------------------------------------

    def notify(self) -> None:
        """Events were spooled: wake the send loop if an early send is now due sooner than its sleep."""
        if self.spool.pending >= self.settings.early_count and self._early_due() < self._sleep_until:
            self._wake.set()

    def _early_due(self) -> float:
        # An early send waits for the cooldown after the last one, and for any backoff.
        return max(self._last_early + self.settings.cooldown, self._next_attempt)

    async def run(self) -> None:
        """The send loop: every interval, earlier when events pile up (see :meth:`notify`), until :meth:`stop`."""
        while not self._stopping:
            regular = max(self._next_regular, self._next_attempt)
            due = regular
            if self.spool.pending >= self.settings.early_count:
                due = min(due, self._early_due())
            now = time.monotonic()
            if due > now:
                self._sleep_until = due
                try:
                    await asyncio.wait_for(self._wake.wait(), due - now)
                except asyncio.TimeoutError:
                    pass
                self._sleep_until = float("inf")
                self._wake.clear()
                continue  # the reason to wake may have changed: look again
            if regular > now:
                self._last_early = now
            try:
                await self.send()
            except Exception as exc:  # the loop outlives any one send; the next waits the interval
                log.warning("send failed: %r", exc)
                self.spool.unpin()

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self._stopping = True
        self._wake.set()

    def in_backoff(self) -> bool:
        """Whether a failed send's backoff (or the endpoint's Retry-After) still runs."""
        return time.monotonic() < self._next_attempt

    # -- sending -----------------------------------------------------------------

    async def send(self) -> bool:
        """Send everything spooled now (one attempt per batch); True when the spool is empty afterwards."""
        async with self._lock:
            self._next_regular = time.monotonic() + self.interval
            opted_out = not consent.decide().sends  # off, or local-only: nothing leaves
            while True:
                batch = self.spool.read_batch(self.settings.batch, self.settings.batch_bytes)
                if batch is None:
                    return True
                if opted_out:  # the user said no after these were recorded: they never leave the machine
                    self.spool.commit(batch)
                    self.dropped["opted_out"] += len(batch.lines)
                    continue
                count, reply = await in_thread(partial(self._deliver, batch.lines))
                if count < len(batch.lines):
                    self.dropped["malformed"] += len(batch.lines) - count
                if reply is None:  # not one event in it: nothing to send
                    self.spool.commit(batch)
                    continue
                interval = server_interval(reply.header("X-SageOx-Interval"))
                if interval is not None and interval != self.interval:
                    log.info("endpoint set the send interval to %.0f s", interval)
                    self.interval = interval
                    self._next_regular = time.monotonic() + self.interval
                if reply.kind == sending.DELIVERED:
                    self.spool.commit(batch)
                    self.delivered += count
                    self._backoff.reset()
                    self._next_attempt = 0.0
                    self.last_success = _time.now_rfc3339()
                    continue
                if reply.kind == sending.REFUSED:
                    log.warning("endpoint refused a batch of %d events with HTTP %d; dropped", count, reply.status)
                    self.spool.commit(batch)
                    self.dropped["rejected"] += count
                    self.last_error = reply.error
                    continue
                self.spool.unpin()
                self.last_error = reply.error
                delay = self._backoff.next_delay(reply.retry_after)
                self._next_attempt = time.monotonic() + delay
                log.info("send failed (%s); next attempt in %.2f s", reply.error, delay)
                return False

    def _deliver(self, lines: list[bytes]) -> tuple[int, sending.Reply | None]:
        # In a worker thread: the body built and sent in one trip. None for a batch without one good event.
        body, count = build_body(self.clientid, lines)
        return count, self.endpoint.post(body) if count else None

    def status(self) -> dict[str, Any]:
        """The delivery part of the daemon's status."""
        backoff = max(0.0, self._next_attempt - time.monotonic())
        return {
            "endpoint": self.url, "interval_s": self.interval, "delivered": self.delivered,
            "requests": self.endpoint.requests, "last_error": self.last_error or None,
            "last_success": self.last_success or None, "backoff_s": round(backoff, 3),
        }
