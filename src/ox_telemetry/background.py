"""Starting a client's background work without making the CLI wait for it.

Three ways to get a queue sent, in order of preference:

1. a running delivery daemon takes the queue over (one message on its socket);
2. a detached uploader process (:mod:`ox_telemetry.uploader`) in its own
   session, output to /dev/null, so it outlives the CLI and the CLI's exit
   never waits on the network;
3. with a host-supplied transport, which only exists inside the CLI process,
   a daemon thread of the client's that stops when the client stops.

Before any of them: nothing starts while the last run's backoff lasts or while
another sender holds the queue, and no uploader starts while the user's
uploader slots are all taken or the endpoint's request budget is spent (see
:mod:`ox_telemetry.budget`), so an outage costs neither a storm of processes
nor of requests.
"""

import os
import sys
import time

from . import _jsonlite, _log, budget, files, paths, settings
from .queue import JsonlQueue, Sender

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading

    from .transport import Transport

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_children: list[int] = []
_LOCK_FD = 3  # where the uploader finds its inherited send lock
_SLOT_FD = 4  # its uploader slot


def isolated_command(entry: str, args: "list[str]", *, site: bool = False) -> "list[str]":
    """The argv that runs ``entry`` ("module:function", called with ``args``) of this very copy of the package.

    The CLI's cwd may be a cloned repository holding an ``ox_telemetry/`` or a
    ``sitecustomize.py``, and its environment may name any import path: so
    ``-I`` (no PYTHON* variables, no user site, neither cwd nor script dir on
    ``sys.path``), ``-S`` (no site-packages: the client and daemon need only
    the standard library, and startup stays cheap), the package's own parent
    directory on ``sys.path`` after the standard library (a site-packages
    parent must not shadow it), and ``/`` as the cwd before anything of ours
    is imported. ``site``: keep site-packages (the collector's writer needs its
    libraries).
    """
    module, _, function = entry.partition(":")
    code = (f"import os,sys;os.chdir('/');sys.path.append({_PACKAGE_PARENT!r});"
            f"from {module} import {function};sys.exit({function}(sys.argv[1:]))")
    return [sys.executable, "-I", *(() if site else ("-S",)), "-c", code, *args]


def isolated_env(extra: "dict[str, str] | None" = None) -> "dict[str, str]":
    """The CLI's environment without PYTHON* variables (``-I`` ignores them; whatever the child starts must too)."""
    env = {key: value for key, value in settings.environment().items() if not key.startswith("PYTHON")}
    env.update(extra or {})
    return env


def backoff_until(queue: JsonlQueue) -> float:
    """Unix time before which no new delivery run of ``queue`` should start (0 when none)."""
    try:
        value = _jsonlite.loads(files.read(paths.upload_state_path(queue.path), 64 * 1024)).get("next_attempt", 0)
        return float(value)
    except (OSError, ValueError, TypeError, AttributeError, RecursionError, OverflowError):
        return 0.0  # garbage is no backoff


def ready(queue: JsonlQueue, force: bool) -> bool:
    """Whether a delivery run of ``queue`` is due (another sender at work is checked later)."""
    if not force and not queue.should_flush():
        return False
    return backoff_until(queue) <= time.time()


def _due_sender(queue: JsonlQueue) -> Sender | None:
    # The backoff is looked at again once the send lock is held: a sender that gives up writes its backoff
    # and then lets go of the lock, so a look taken before the lock can miss it and start a second run.
    sender = queue.sender()
    if sender is not None and backoff_until(queue) > time.time():
        sender.close()
        return None
    return sender


def hand_to_daemon(queue: JsonlQueue, url: str, cli_version: str) -> bool:
    """Ask a running delivery daemon to send ``queue``; True when it took it (or a sender is at work)."""
    if not os.path.exists(paths.daemon_socket_path()):
        return False
    if queue.sender_busy():
        return True
    from . import ipc  # only now: its socket module is not free to load

    answer = ipc.request(
        {"type": "flush_queue",
         "payload": {"queue_path": os.path.abspath(queue.path), "url": url, "cli_version": cli_version}}
    )
    return bool(answer and answer.get("success") is True)


def spawn_uploader(queue: JsonlQueue, url: str, cli_version: str) -> bool:
    """Start a detached uploader process for ``queue``; True when it started.

    The send lock and one of the user's uploader slots (see
    :mod:`ox_telemetry.budget`) are taken here and handed to the child
    already held: two CLIs finishing at once cannot start two uploaders for
    one queue, nor many projects more than the user's slots.
    """
    _reap()
    if not sys.executable or not hasattr(os, "posix_spawn"):
        return False  # frozen host or no spawn: the events wait on disk
    if budget.blocked_until(url) > time.time():
        return False  # the user's requests to this endpoint are spent for now
    sender = _due_sender(queue)
    if sender is None:
        return False  # an uploader is at work already, or the last one's backoff lasts
    slot = budget.take_slot()
    if slot is None:
        sender.close()
        return False  # the user's uploaders are all at work: the events wait on disk
    argv = isolated_command("ox_telemetry.uploader:main", [
        "--queue", os.path.abspath(queue.path), "--url", url, "--cli-version", cli_version,
        "--lock-fd", str(_LOCK_FD)])
    from fcntl import F_DUPFD_CLOEXEC, fcntl

    # Copies above the target descriptors, so that neither dup2 below overwrites the other's source.
    held = [fcntl(sender.lock_fd(), F_DUPFD_CLOEXEC, 10), fcntl(slot.fileno(), F_DUPFD_CLOEXEC, 10)]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
        (os.POSIX_SPAWN_DUP2, held[0], _LOCK_FD),  # dup2 clears close-on-exec
        (os.POSIX_SPAWN_DUP2, held[1], _SLOT_FD),  # held, never closed, for as long as the uploader lives
    ]
    try:
        pid = os.posix_spawn(sys.executable, argv, isolated_env(), file_actions=actions, setsid=True)
    except OSError as exc:
        _log.debug("could not start the uploader: %s", exc)
        sender.close()
        slot.release()
        slot.close()
        return False
    finally:
        for fd in held:
            os.close(fd)
    sender.detach()  # the child holds both locks now; unlocking here would free them
    slot.detach()
    _children.append(pid)
    return True


def _reap() -> None:
    # Collect uploaders that have finished, so a long-lived host keeps no zombies.
    for pid in list(_children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _children.remove(pid)


class ThreadSender:
    """Sends queues from daemon threads through a host-supplied transport."""

    def __init__(self, transport: "Transport") -> None:
        import threading

        self.transport = transport
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, queue: JsonlQueue, url: str, cli_version: str) -> None:
        """Send ``queue`` in the background."""
        import threading

        from .delivery import Delivery

        if self._stop.is_set():
            return
        sender = _due_sender(queue)
        if sender is None:
            return
        delivery = Delivery(queue, self.transport, url, cli_version, wait=self._stop.wait)

        def run() -> None:
            try:
                delivery.run(sender)  # the lock taken above, released by this thread when it is done
            except Exception as exc:  # a guest in the host's process: never a traceback
                _log.debug("background send failed: %r", exc)

        thread = threading.Thread(target=run, name="ox-telemetry-send", daemon=True)
        try:
            thread.start()
        except BaseException:
            sender.close()
            raise
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def stop(self, grace: float = 0.005) -> None:
        """Ask the threads to stop; waits at most ``grace`` seconds in all. Unsent events stay on disk."""
        self._stop.set()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def threads(self) -> "list[threading.Thread]":
        """The sending threads still alive."""
        return [t for t in self._threads if t.is_alive()]
