"""The daemon's asyncio Unix-socket server and its counters.

Ingest is the hot path (tens of thousands of one-way ``telemetry`` lines a
second): each read chunk is split into lines here, every good event line is
turned into a spool line around the received bytes, and the chunk's events
go to the spool in one ``write`` before they count as received. Requests
(``ping``, ``status``, ``stop``, ``flush``, ``flush_queue``) are answered one
line each; a request after events in the same chunk sees them spooled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import __version__, consent
from ..transport import UrllibTransport
from . import APP_TYPE
from .handoff import HandOffPool
from .protocol import (
    ProtocolError,
    Request,
    Stamp,
    answer,
    decode,
    own_event_line,
    parse_request,
    spool_line,
    telemetry_error,
)
from .spool_sender import SpoolSender, in_thread, otlp_records

if TYPE_CHECKING:
    from ..otlp import Exporter

log = logging.getLogger("ox_telemetry.daemon")
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: A connection whose sender has finished within this many bytes is handled inline.
_INLINE_BYTES = 256 * 1024


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``); None where unsupported."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _CREDS.size))
    return int(uid)


class _OneShot:
    """The answer side of a connection already closed by its sender (a CLI's one-way ``send``)."""

    __slots__ = ("sock", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.waiting = 0

    def reply(self, line: bytes) -> None:
        try:
            self.sock.send(line)  # best effort: a sender that closed reads nothing
        except OSError:
            pass


class Connection(asyncio.Protocol):
    """One client connection: buffers partial lines, hands complete ones to the daemon."""

    def __init__(self, daemon: Daemon, sock: socket.socket, pending: bytes = b"") -> None:
        self.daemon = daemon
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pending = pending  # read before the connection became a transport
        self.last_active = time.monotonic()
        self.waiting = 0  # answers still to come (a flush in progress is not idleness)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.pending:
            data, self.pending = self.pending, b""
            self.data_received(data)  # before the transport reads anything: order kept

    def connection_lost(self, exc: Exception | None) -> None:
        self.daemon.forget(self)
        self.transport = None

    def idle_since(self, cutoff: float) -> bool:
        """Whether closing this connection now loses nothing: quiet since ``cutoff``, no partial line,
        no answer owed, and no bytes waiting unread in the kernel."""
        if self.waiting or self.buffer or self.last_active >= cutoff or self.transport is None:
            return False
        try:
            return not self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": the sender closed
        except BlockingIOError:
            return True
        except OSError:
            return True  # a broken connection holds nothing we could still read

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.buffer:
            data = self.buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self.buffer = data
            self._check_partial()
            return
        self.buffer = data[end + 1 :]
        self.daemon.handle_chunk(data[:end], self)
        self._check_partial()

    def _check_partial(self) -> None:
        limit = self.daemon.settings.max_line
        if len(self.buffer) > limit and self.transport is not None:
            log.debug("closed a connection: line longer than %d bytes", limit)
            self.daemon.dropped["invalid"] += 1
            self.buffer = b""
            self.reply(answer(False, f"line longer than {limit} bytes"))
            self.transport.close()

    def reply(self, line: bytes) -> None:
        """Write one answer line, if the connection is still open."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(line)


def _refuse(conn: Connection | _OneShot, error: ProtocolError) -> None:
    """Answer a line that is not a message the daemon takes, precisely, and go on serving."""
    log.debug("bad line: %s", error)
    conn.reply(answer(False, str(error)))


class Daemon:
    """The running daemon: socket server, spool, spool sender and queue hand-offs."""

    def __init__(self, socket_path: str, sender: SpoolSender, otlp: Exporter | None = None) -> None:
        self.socket_path = socket_path
        self.otlp = otlp  # also exports every event received (SAGEOX_TELEMETRY_OTLP_ENDPOINT)
        self.sender = sender
        self.settings = sender.settings
        self.spool = sender.spool  # the sender sends what the daemon spools
        self.connections: set[Connection] = set()
        self._listener: socket.socket | None = None  # read by the loop only while below the connection limit
        self._accepting = False
        self._pressure = asyncio.Event()  # at the limit: the sweeper frees room for the connections waiting
        self.received = 0
        self.dropped: dict[str, int] = {"invalid": 0, "disk": 0}
        self.started = time.monotonic()
        self._stop_requested: asyncio.Event | None = None
        self.handoff = HandOffPool(UrllibTransport)  # other processes' queues, sent in threads

    # -- ingest ------------------------------------------------------------------

    def handle_chunk(self, data: bytes, conn: Connection | _OneShot) -> None:
        """Act on the complete lines in ``data`` (newline-separated, without the last newline)."""
        stamp = Stamp()
        events: list[bytes] = []
        limit = self.settings.max_line
        for line in data.split(b"\n"):
            if not line or line.isspace():
                continue
            if len(line) > limit:
                self.dropped["invalid"] += 1
                conn.reply(answer(False, f"line longer than {limit} bytes"))
                continue
            try:
                message = decode(line)
            except ProtocolError as exc:  # maybe a one-way event: counted, as no sender may read the answer
                self.dropped["invalid"] += 1
                _refuse(conn, exc)
                continue
            if type(message) is dict and message.get("type") == "telemetry":
                error = telemetry_error(message)
                if error is None:
                    events.append(spool_line(line, stamp))
                else:  # one-way: the sender does not read; logged and counted
                    log.debug("dropped a telemetry message: %s", error)
                    self.dropped["invalid"] += 1
                continue
            self._spool(events)  # a request sees the events before it
            events = []
            try:
                self._handle_request(parse_request(message), conn)
            except ProtocolError as exc:
                _refuse(conn, exc)
            except Exception as exc:  # one request must not cost the lines after it
                log.warning("request failed: %r", exc)
                conn.reply(answer(False, "internal error"))
        self._spool(events)

    def _spool(self, events: list[bytes]) -> None:
        if not events:
            return
        try:
            self.spool.append(events)
        except OSError as exc:
            log.warning("could not spool %d events: %s", len(events), exc)
            self.dropped["disk"] += len(events)
            return
        self.received += len(events)
        self.sender.notify()
        if self.otlp is not None:  # the lines as spooled; parsed, scrubbed and sent on the exporter's thread
            self.otlp.offer(len(events), partial(otlp_records, self.sender.clientid, events))

    def add_own_event(self, event: str) -> None:
        """Spool an event of the daemon's own (counted as received like any other)."""
        self._spool([own_event_line(event, self._own_props())])

    @staticmethod
    def _own_props() -> dict[str, Any]:
        from ..wire import host_arch, host_os

        return {"app_type": APP_TYPE, "app_version": __version__, "os": host_os(), "arch": host_arch()}

    # -- requests ------------------------------------------------------------------

    def _handle_request(self, request: Request, conn: Connection | _OneShot) -> None:
        kind = request.type
        if kind == "ping":
            conn.reply(answer(True, data={"pid": os.getpid(), "version": __version__}))
        elif kind == "status":
            conn.reply(answer(True, data=self.status()))
        elif kind == "stop":
            conn.reply(answer(True))
            self.request_stop()
        elif kind == "flush":
            conn.waiting += 1
            asyncio.get_running_loop().create_task(self._flush(conn))
        elif kind == "flush_queue":
            try:
                self._hand_off(request.payload)
            except OSError as exc:  # a path that is no queue of this user's: refused, counted
                log.warning("refused to send a queue: %s", exc)
                conn.reply(answer(False, f"flush_queue: {exc}"))
                return
            conn.reply(answer(True))

    async def _flush(self, conn: Connection | _OneShot) -> None:
        try:
            if self._stop_requested is not None and self._stop_requested.is_set():
                conn.reply(answer(False, "daemon is stopping"))
                return
            empty = await self.sender.send()
            data = {k: v for k, v in self.status().items() if k in ("received", "delivered", "spooled", "dropped")}
            conn.reply(answer(empty, None if empty else self.sender.last_error or "not delivered", data))
        finally:
            conn.waiting -= 1

    def _hand_off(self, payload: dict[str, Any]) -> None:
        path = payload["queue_path"]
        if not consent.decide().sends:  # opted out, or local-only, since that CLI recorded: leave its queue alone
            log.debug("not sending queue %s: telemetry is turned off", path)
            return
        self.handoff.take(path, payload["url"], str(payload.get("cli_version", "")))

    def status(self) -> dict[str, Any]:
        """The ``status`` answer's data."""
        dropped = {**self.dropped, **self.sender.dropped, "spool_full": self.spool.dropped}
        return {
            "pid": os.getpid(), "version": __version__, "uptime_s": round(time.monotonic() - self.started, 3),
            "socket": self.socket_path, "client_id": self.sender.clientid,
            **self.sender.status(),
            "received": self.received, "spooled": self.spool.pending, "dropped": dropped,
            "connections": len(self.connections),
            "queues_in_flight": self.handoff.in_flight(), "queues_refused": self.handoff.refused,
            "otlp": None if self.otlp is None else {"endpoint": self.otlp.url, **self.otlp.counters()},
        }

    # -- accepting ----------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(256):  # then let the loop serve the connections it has
            if len(self.connections) >= self.settings.max_connections:
                # Backpressure, never accept-and-drop: new connections wait in the listen backlog, their
                # lines unread but kept, until room frees; a full backlog makes a CLI's connect fail.
                self._stop_accepting()
                return
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the rest waits in the backlog
                log.warning("accept failed: %s", exc)
                return
            try:
                self._take(sock)
            except Exception as exc:  # one bad connection must not end the daemon
                log.warning("dropped a connection: %r", exc)
                sock.close()

    def _take(self, sock: socket.socket) -> None:
        """Check a new connection, then serve it: inline if its sender is already done, else as a transport.

        A CLI's ``send_to_daemon`` connects, writes one line and closes, usually
        before the daemon gets to it: such a connection is read to its end and
        handled here, at a fraction of the cost of an asyncio transport.
        """
        try:
            uid = peer_uid(sock)
        except OSError:
            uid = -1
        if uid is not None and uid != os.geteuid():
            log.warning("closed a connection from uid %s", uid)
            sock.close()
            return
        sock.setblocking(False)
        data = b""
        ended = False
        while len(data) < _INLINE_BYTES:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
                break
            data += chunk
        if ended and b'"flush' not in data:  # a flush answers later: that needs a transport
            end = data.rfind(b"\n")  # a last line without its newline is torn: dropped
            if end >= 0:
                self.handle_chunk(data[:end], _OneShot(sock))
            sock.close()
            return
        conn = Connection(self, sock, data)
        self.connections.add(conn)  # counted at once, so a burst cannot pass the limit
        asyncio.get_running_loop().create_task(self._attach(conn, sock))

    async def _attach(self, conn: Connection, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock)
        except OSError as exc:
            log.debug("lost a connection while attaching it: %s", exc)
            self.forget(conn)
            sock.close()

    def forget(self, conn: Connection) -> None:
        """A connection ended: take new ones again if the limit had stopped that."""
        self.connections.discard(conn)
        if not self._accepting and len(self.connections) < self.settings.max_connections:
            self._start_accepting()

    def _start_accepting(self) -> None:
        stopping = self._stop_requested is None or self._stop_requested.is_set()
        if self._listener is not None and not self._accepting and not stopping:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept, self._listener)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._listener is not None and self._accepting:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._accepting = False
            log.debug("not accepting: %d connections open", len(self.connections))
            self._pressure.set()

    # -- lifecycle -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a clean shutdown (``stop`` message, SIGTERM, SIGINT)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve(self, sock: socket.socket) -> None:
        """Serve on the bound, listening ``sock`` until asked to stop; then send what it can and return."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        sock.setblocking(False)
        self._listener = sock
        self._start_accepting()
        if self.otlp is not None:
            self.otlp.start()
        self.add_own_event("app:startup")
        sending = loop.create_task(self.sender.run())
        sweeper = loop.create_task(self._close_idle())
        log.info("listening on %s, sending to %s every %.3g s", self.socket_path, self.sender.url,
                 self.sender.interval)
        await self._stop_requested.wait()
        log.info("stopping")
        self._stop_accepting()
        sweeper.cancel()
        self.sender.stop()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()  # answers already written go out first
        self.handoff.stop()
        self.add_own_event("app:shutdown")
        # A last send, bounded, and not against a backoff or Retry-After: what does
        # not make it waits in the spool for the next start.
        final = [sending] if self.sender.in_backoff() else [sending, self.sender.send()]
        try:
            await asyncio.wait_for(asyncio.gather(*final), self.settings.stop_grace)
        except (asyncio.TimeoutError, OSError) as exc:
            log.info("stopped with %d events spooled (%r)", self.spool.pending, exc)
        try:
            self.spool.sync()
        except OSError:
            pass
        if self.otlp is not None:  # what it cannot send in the grace is left (counted as dropped)
            await in_thread(partial(self.otlp.close, self.settings.stop_grace))

    async def _close_idle(self) -> None:
        """Close connections idle for ``idle`` seconds; while the limit holds new ones back, for ``busy_idle``.

        So connections held open and silent delay others (a ``ping``, a CLI's
        event waiting in the backlog) by about ``busy_idle``, never starve them.
        """
        settings = self.settings
        while True:
            pressed = not self._accepting
            try:
                await asyncio.wait_for(self._pressure.wait(), 0.1 if pressed else min(1.0, settings.idle / 2))
            except asyncio.TimeoutError:
                pass
            self._pressure.clear()
            cutoff = time.monotonic() - (settings.idle if self._accepting else min(settings.idle, settings.busy_idle))
            for conn in list(self.connections):
                if conn.idle_since(cutoff):
                    log.debug("closed an idle connection")
                    conn.transport.close()  # type: ignore[union-attr]  # idle_since checked it
