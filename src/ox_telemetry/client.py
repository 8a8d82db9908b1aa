"""The client a CLI embeds: record events, queue them on disk, send them in the background.

Every public method swallows every failure (logged at debug level on the
``ox_telemetry`` logger): telemetry is a guest in someone else's program. The
consent decision is made once, in the constructor; a disabled client does
nothing at all afterwards, not even open a file.

Where events go, once recorded:

- with a ``project_root`` (an initialised project): the project's file queue;
- otherwise: a bounded in-memory list, spilled by :meth:`Client.flush` or
  :meth:`Client.stop` to a per-user spool file (one per endpoint);
- with ``OX_TELEMETRY_DEBUG=1``: stderr, one JSON line each, and nowhere else;
- in local mode (the user's ``ox-telemetry mode local``): the user's local
  record (:mod:`ox_telemetry.local_record`), and nowhere else: no queue, no
  spool, no uploader, no daemon.

Sending happens in :mod:`ox_telemetry.background`, never on the caller's thread.
"""

import _thread
import os
import sys

from . import _log
from ._time import now_rfc3339
from .wire import EVENT_COMMAND_COMPLETE, EVENT_DAEMON_START_FAILURE, Event, new_event_id, version_suffix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import timedelta
    from types import TracebackType
    from typing import Any

    from .background import ThreadSender
    from .consent import Decision
    from .local_record import LocalRecord
    from .queue import FileQueue, JsonlQueue
    from .stats import Stats
    from .transport import Transport

#: Events a client without a project keeps in memory before the oldest are dropped.
MEMORY_QUEUE_SIZE = 100
_ERROR_MSG_LIMIT = 500


class Client:
    """Records a CLI's events and delivers them in the background.

    ``enabled``: None means on unless the user opted out; False means off;
    True means on *unless the user opted out* (the user always wins).
    ``disable_in_ci``: off when a CI service is detected (consent rule ``ci``);
    either way, events recorded in CI carry ``metadata["ci"]``.
    """

    def __init__(
        self,
        session_id: str = "",
        *,
        base_url: "str | None" = None,
        enabled: "bool | None" = None,
        transport: "Transport | None" = None,
        project_root: "str | os.PathLike[str] | None" = None,
        version: "str | None" = None,
        disable_in_ci: bool = False,
    ) -> None:
        from . import settings  # here, not at import: a CLI that never makes a client pays nothing for it

        self.session_id = session_id if isinstance(session_id, str) else str(session_id)
        self.base_url = settings.base_url(base_url)
        self.version = version or ""
        self._line_end = version_suffix(self.version)  # every queued line carries this CLI's version
        self._transport = transport
        self._lock = _thread.allocate_lock()
        self._pid = os.getpid()  # a forked child notices it runs in another process; see _own_lock
        self._memory: list[bytes] = []
        self._stats: Stats | None = None
        self._stopped = False
        self._queue: FileQueue | None = None
        self._spool: JsonlQueue | None = None
        self._sender: ThreadSender | None = None
        self._record: LocalRecord | None = None  # local mode: where events go instead of a queue
        self._sends = False  # events go to a queue and on to the endpoint (neither debug nor local)
        self._defaults: dict[str, object] = {"api_endpoint": self.base_url}
        self._debug = False
        self._ci: str | None = None
        root = os.fspath(project_root) if project_root else None
        self._project_root = root
        try:
            from . import consent

            # Once per client: the environment does not change under a CLI.
            self._decision = consent.decide(enabled, project_root=root, disable_in_ci=disable_in_ci)
            self._ci = self._decision.ci
            if self._ci:
                self._defaults["metadata"] = {"ci": self._ci}  # events without metadata; see _with_ci
            repo_id = self._decision.project_config.get("repo_id")
            if isinstance(repo_id, str) and repo_id:
                self._defaults["repo_id"] = repo_id
            self._debug = self._decision.enabled and settings.debug()
            if self._decision.enabled and not self._debug:
                # Imported now, not by the first track(): a fork while another thread imports
                # the queue module would leave the child waiting on that import's lock for ever.
                if self._decision.local:
                    from . import local_record

                    self._record = local_record.LocalRecord()
                else:
                    self._sends = True
                    self._file_queue()
        except Exception as exc:
            from .consent import Decision

            _log.debug("telemetry disabled, consent check failed: %r", exc)
            self._decision = Decision(False, "error")

    # -- state ---------------------------------------------------------------

    def is_enabled(self) -> bool:
        """Whether this client records anything."""
        return self._decision.enabled

    @property
    def consent(self) -> "Decision":
        """The consent decision and the rule that made it."""
        return self._decision

    def get_stats(self) -> "Stats":
        """A copy of this session's command statistics (empty ones if even that fails)."""
        try:
            with self._own_lock():
                return self._stats_obj().copy()
        except Exception as exc:
            _log.debug("get_stats failed: %r", exc)
            from .stats import Stats

            return Stats(self.session_id)

    def _own_lock(self) -> "_thread.LockType":
        """The lock of this client's state, made anew in a forked child.

        In a child, another thread of the parent may hold the old lock for
        ever, and the events in memory are the parent's to spill.
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = _thread.allocate_lock()
            self._memory = []
            self._sender = None
        return self._lock

    def _stats_obj(self) -> "Stats":
        if self._stats is None:
            from .stats import Stats

            self._stats = Stats(self.session_id)
        return self._stats

    def count_command(self, command: str, seconds: float, success: bool) -> None:
        """Add one command run to the session stats without recording an event (the integrations record their own)."""
        if not self._decision.enabled:
            return
        try:
            with self._own_lock():
                self._stats_obj().record_command(command, seconds, success)
        except Exception as exc:  # a guest in the host's process: never a traceback
            _log.debug("count_command failed: %r", exc)

    def _file_queue(self) -> "FileQueue | None":
        if self._queue is None and self._project_root:
            from .queue import FileQueue

            self._queue = FileQueue(self._project_root)
        return self._queue

    def _user_spool(self) -> "JsonlQueue":
        if self._spool is None:
            from . import paths
            from .queue import JsonlQueue

            self._spool = JsonlQueue(paths.user_spool_path(self.base_url))
        return self._spool

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Begin background work: send what earlier runs left queued, if it is time."""
        if not self._sends:
            return
        try:
            self._kick_all(force=False)
        except Exception as exc:
            _log.debug("telemetry start failed: %r", exc)

    def stop(self) -> None:
        """Shut down promptly; unsent events stay on disk and a background uploader sends them."""
        if not self._decision.enabled:
            return
        try:
            with self._own_lock():
                self._stopped = True
            if self._record is not None:
                self._record.close()
            if self._sends:
                self._spill()
                self._kick_all(force=False)
            if self._sender is not None:
                self._sender.stop()
        except Exception as exc:
            _log.debug("telemetry stop failed: %r", exc)

    def __enter__(self) -> "Client":
        self.start()
        return self

    def __exit__(
        self, exc_type: "type[BaseException] | None", exc: "BaseException | None", tb: "TracebackType | None"
    ) -> None:
        self.stop()

    # -- recording -----------------------------------------------------------

    def track(self, event: Event) -> None:
        """Record an event: stamped (timestamp, event_id, repo_id, api_endpoint) and queued."""
        if not self._decision.enabled:
            return
        try:
            line = self._encode(event)
            if line is None:
                return
            if self._record is not None:
                self._record.append(line)  # local mode: kept here, and nowhere else
                return
            queue = self._queue or self._file_queue()
            if queue is not None and queue.writable():
                try:
                    queue.write(line + b"\n")
                    return
                except OSError as exc:  # read-only project, full disk: keep it in memory
                    _log.debug("project queue refused an event: %r", exc)
            self._remember(line)
        except Exception as exc:
            _log.debug("track failed: %r", exc)

    def track_async(self, event: Event) -> None:
        """Send one event now, in the background (kept on disk until delivered)."""
        if not self._decision.enabled:
            return
        if self._record is not None:
            self.track(event)  # local mode: recorded like any other, sent never
            return
        try:
            line = self._encode(event)
            if line is None:
                return
            spool = self._user_spool()
            spool.append_line(line)
            self._kick(spool, force=True)
        except Exception as exc:
            _log.debug("track_async failed: %r", exc)

    def track_command(
        self, command: str, duration: "timedelta | float", success: bool,
        error_code: "str | BaseException | type[BaseException]" = "",
    ) -> None:
        """Update the session stats and record a ``command_complete`` event.

        ``duration`` is a timedelta or seconds; an exception (or exception
        class) given as ``error_code`` is recorded by its class name, never
        its message.
        """
        if not self._decision.enabled:
            return
        try:
            from .stats import as_seconds

            seconds = as_seconds(duration)
            if isinstance(error_code, BaseException):
                error_code = error_code.__class__.__name__
            elif isinstance(error_code, type) and issubclass(error_code, BaseException):
                error_code = error_code.__name__
            self.count_command(str(command), seconds, bool(success))
            self.track(Event(
                EVENT_COMMAND_COMPLETE, command=command, duration_ms=int(seconds * 1000),
                success=bool(success), error_code=error_code, session_id=self.session_id,
            ))
        except Exception as exc:
            _log.debug("track_command failed: %r", exc)

    def flush(self) -> None:
        """Send everything queued, in the background."""
        if not self._sends:
            return
        try:
            self._spill()
            self._kick_all(force=True)
        except Exception as exc:
            _log.debug("flush failed: %r", exc)

    def track_daemon_start_failure(self, error_type: str, error_msg: str) -> None:
        """Report that the daemon failed to start, at most as often as the rate limit allows."""
        if not self._decision.enabled:
            return
        try:
            from . import ratelimit

            # Debug prints every report; local mode records every one and writes no file but its record.
            if self._sends and not ratelimit.allow():
                return
            self.track_async(Event(
                EVENT_DAEMON_START_FAILURE, session_id=self.session_id,
                metadata={"error_type": str(error_type), "error_msg": str(error_msg)[:_ERROR_MSG_LIMIT]},
            ))
        except Exception as exc:
            _log.debug("track_daemon_start_failure failed: %r", exc)

    def reset_daemon_failure_rate_limit(self) -> None:
        """Forget the failure-report backoff."""
        if not self._decision.enabled or self._decision.local:  # local mode writes no file but its record
            return
        try:
            from . import ratelimit

            ratelimit.reset()
        except Exception as exc:
            _log.debug("reset of the failure rate limit failed: %r", exc)

    def send_to_daemon(self, event_type: str, props: "dict[str, Any] | None" = None) -> None:
        """One-way message to the delivery daemon; nothing happens when none listens."""
        if not self._decision.enabled:
            return
        try:
            from . import ipc

            if not self._debug and (self._decision.held or self._decision.local):
                # One-way and unqueued: in the notice's run it cannot wait for a later one, and in
                # local mode the daemon is nobody to give anything to.
                return
            merged = dict(props) if isinstance(props, dict) else {}
            merged.setdefault("app_type", "ox")
            merged.setdefault("app_version", self.version)
            if self._debug:
                from . import _jsonlite
                from .scrub import scrub_value

                # The props as the daemon will send them: scrubbed.
                payload = {"event": str(event_type), "props": scrub_value(merged)}
                self._print(_jsonlite.dumps({"type": "telemetry", "payload": payload}))
                return
            ipc.send({"type": "telemetry", "payload": {"event": str(event_type), "props": merged}})
        except Exception as exc:
            _log.debug("send_to_daemon failed: %r", exc)

    # -- internals -----------------------------------------------------------

    def _encode(self, event: Event) -> "bytes | None":
        """The stamped JSON line of ``event``; None in debug mode, where it is printed instead."""
        defaults = self._defaults
        if event.timestamp is None or not event.event_id:
            defaults = {**defaults, "timestamp": now_rfc3339(), "event_id": new_event_id()}
        if self._ci:
            event = self._with_ci(event)
        line = event.to_json(defaults)
        if self._debug:
            from .scrub import scrub_line  # debug output is exactly what would be sent

            self._print(scrub_line(line))
            return None
        return (line[:-1] + self._line_end).encode("ascii")

    def _with_ci(self, event: Event) -> Event:
        """``event`` with ``metadata["ci"]`` added; a copy, so the caller's event stays as it was.

        Events without metadata get it from the defaults instead, uncopied.
        """
        metadata = event.metadata
        if not metadata or not isinstance(metadata, dict) or "ci" in metadata:
            return event  # the defaults' ci; the host's own value wins; odd metadata is cleaned by the encoder
        event = event.copy()
        event.metadata = {**event.metadata, "ci": str(self._ci)}
        return event

    @staticmethod
    def _print(line: str) -> None:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            pass

    def _remember(self, line: bytes) -> None:
        with self._own_lock():
            stopped = self._stopped
            if not stopped:
                self._memory.append(line)
                if len(self._memory) > MEMORY_QUEUE_SIZE:
                    del self._memory[: len(self._memory) - MEMORY_QUEUE_SIZE]
        if stopped:  # nobody will spill it later: straight to disk
            self._user_spool().append_line(line)

    def _spill(self) -> None:
        with self._own_lock():
            lines, self._memory = self._memory, []
        if lines:
            try:
                self._user_spool().append_lines(lines)
            except OSError as exc:
                _log.debug("could not spill %d events to the spool: %r", len(lines), exc)
                with self._own_lock():
                    self._memory[:0] = lines[-MEMORY_QUEUE_SIZE:]

    def _kick_all(self, force: bool) -> None:
        queue = self._file_queue()
        if queue is not None and queue.usable():  # a linked .sageox is handed to no sender, not even the daemon
            self._kick(queue, force)
        spool = self._user_spool()
        if os.path.exists(spool.path) or os.path.exists(spool.sending_path):
            self._kick(spool, force)

    def _kick(self, queue: "JsonlQueue", force: bool) -> None:
        if self._decision.held:
            return  # the consent notice was shown in this run: its events wait for a later one
        from . import background

        if not background.ready(queue, force):
            return
        from .settings import TELEMETRY_PATH

        url = self.base_url + TELEMETRY_PATH
        if self._transport is not None:
            if self._sender is None:
                self._sender = background.ThreadSender(self._transport)
            self._sender.start(queue, url, self.version)
        elif not background.hand_to_daemon(queue, url, self.version):
            background.spawn_uploader(queue, url, self.version)
