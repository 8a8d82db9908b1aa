"""The disk queue: one JSON event a line, shared by any number of processes.

Files beside the queue file ``Q`` (for a project, ``.sageox/cache/telemetry.jsonl``):

``Q``           events waiting, oldest first.
``Q.sending``   events claimed by the one sender at work (or left by one that
                died or gave up); still queued until the endpoint accepted them.
``Q.lock``      held briefly around every change to ``Q`` and ``Q.sending``;
                its content is a counter bumped whenever ``Q`` is replaced.
``Q.send.lock`` held by the sender for as long as it sends, so there is at
                most one per queue (uploader process, client thread or daemon).

Appends never interleave (each is one ``write`` under ``Q.lock``). A sender
moves ``Q`` into ``Q.sending`` under that lock, so an event appended during a
send lands in a fresh ``Q``: it is neither lost nor sent twice. The sender
removes lines from ``Q.sending`` only after the endpoint accepted them; if it
dies first, the next sender sends them again, with the same ``event_id``.

A writer keeps ``Q`` open between appends (an open costs more than the rest of
an append); the counter in ``Q.lock`` tells it, for the price of one ``pread``,
that ``Q`` was replaced and must be opened again. Nothing here deletes a lock
file: a process holding the old one would no longer exclude the others.
"""

import os
import time
from fcntl import LOCK_EX, LOCK_NB, LOCK_UN, flock

from . import _jsonlite, _time, paths
from .wire import Event, new_event_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

#: The queue file stays under this; an append that would pass it drops the oldest events.
MAX_BYTES = 1024 * 1024
#: After dropping, the file is cut to this share of the bound, so a full queue
#: is not rewritten on every append.
_TRIM_TO = 0.75
FLUSH_COUNT = 10
FLUSH_AGE_SECONDS = 3600.0

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_APPEND = os.O_RDWR | os.O_APPEND | os.O_CREAT | _CLOEXEC


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def _parse_lines(data: bytes) -> "list[Event]":
    events = []
    for line in data.splitlines():
        if line.strip():
            try:
                events.append(Event.from_json(line))
            except (ValueError, UnicodeDecodeError):
                pass  # a torn or foreign line: skipped, never fatal
    return events


def _age_seconds(stamp: object) -> float:
    try:
        return time.time() - _time.parse_rfc3339(stamp).timestamp()  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError):
        return FLUSH_AGE_SECONDS  # no readable time: old enough to send


def _write_atomic(path: str, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` (mode 0600) through a temporary file; ``sync``: fsync it first."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _drop_oldest(data: bytes, keep_bytes: int) -> bytes:
    """The newest whole lines of ``data`` that fit in ``keep_bytes``."""
    if len(data) <= keep_bytes:
        return data
    cut = data.find(b"\n", len(data) - keep_bytes - 1)
    return data[cut + 1 :] if cut >= 0 else b""


class _FileLock:
    """An exclusive ``flock`` on a small file, also exclusive between threads."""

    def __init__(self, path: str) -> None:
        import _thread

        self.path = path
        self._fd = -1
        self._mutex = _thread.allocate_lock()

    def fileno(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o600)
        return self._fd

    def acquire(self, blocking: bool = True) -> bool:
        if not self._mutex.acquire(blocking):
            return False
        try:
            flock(self.fileno(), LOCK_EX if blocking else LOCK_EX | LOCK_NB)
        except BlockingIOError:
            self._mutex.release()
            return False
        except BaseException:
            self._mutex.release()
            raise
        return True

    def release(self) -> None:
        try:
            flock(self._fd, LOCK_UN)
        finally:
            self._mutex.release()

    def __enter__(self) -> "_FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def adopt(self, fd: int) -> None:
        """Take over ``fd``, already locked (inherited from the process that locked it)."""
        self._mutex.acquire()
        self._fd = fd


class JsonlQueue:
    """A bounded, multi-process JSONL event queue at ``path``.

    The building block of :class:`FileQueue` (a project's queue) and of the
    per-user spool; also used by the uploader and the delivery daemon.
    """

    def __init__(self, path: str, max_bytes: int = MAX_BYTES) -> None:
        self._path = path
        self.max_bytes = max_bytes
        self.sending_path = path + ".sending"
        self._lock = _FileLock(path + ".lock")
        self._fd = -1  # ``Q`` kept open for appends
        self._generation = b""  # the lock file's counter when ``_fd`` was opened

    @property
    def path(self) -> str:
        """The queue file."""
        return self._path

    def _writable(self) -> bool:
        return True

    def append(self, event: Event) -> None:
        """Append one event (stamping ``timestamp`` if None). Raises OSError when the disk refuses.

        An event without an ``event_id`` is written with a new one (the event
        itself keeps none, so appending it twice records two events).
        """
        if not self._writable():
            return
        if event.timestamp is None:
            event.timestamp = _time.now()
        line = event.to_json(None if event.event_id else {"event_id": new_event_id()})
        self.append_line(line.encode("ascii"))

    def append_line(self, line: bytes) -> None:
        """Append one already-encoded event (without its newline)."""
        if self._writable():
            self._write(line + b"\n")

    def append_lines(self, lines: "list[bytes]") -> int:
        """Append encoded events (without newlines) in one write; returns how many old lines the bound dropped."""
        if not lines or not self._writable():
            return 0
        return self._write(b"\n".join(lines) + b"\n")

    def _write(self, data: bytes) -> int:
        try:
            return self._append(data)
        except FileNotFoundError:  # first event of this queue: make its directory
            os.makedirs(os.path.dirname(self._path) or ".", mode=0o700, exist_ok=True)
            return self._append(data)

    def _append(self, data: bytes) -> int:
        # Every call of every event goes through here: kept to the syscalls it needs
        # (lock, read the generation, write, learn the size, unlock).
        lock = self._lock
        lock_fd = lock.fileno()
        lock._mutex.acquire()
        try:
            flock(lock_fd, LOCK_EX)
            try:
                generation = os.pread(lock_fd, 32, 0)
                fd = self._fd
                if fd < 0 or generation != self._generation:
                    fd = self._reopen(generation)
                written = os.write(fd, data)
                size = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: the end of the file, our line included
                if written != len(data):  # disk full: take the fragment back
                    os.ftruncate(fd, size - written)
                    raise OSError(28, "short write to telemetry queue")
                return self._trim() if size > self.max_bytes else 0
            finally:
                flock(lock_fd, LOCK_UN)
        finally:
            lock._mutex.release()

    def _reopen(self, generation: bytes) -> int:
        # Caller holds the lock; ``Q`` was replaced (or never opened) since the last append.
        self._close_fd()
        fd = os.open(self._path, _O_APPEND, 0o600)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # a line torn by a crash stays apart from ours
        self._fd, self._generation = fd, generation
        return fd

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _replaced(self) -> None:
        # Caller holds the lock and has just replaced or removed ``Q``: tell every writer.
        fd = self._lock.fileno()
        count = int(os.pread(fd, 32, 0) or b"0") + 1
        os.pwrite(fd, b"%d" % count, 0)
        self._close_fd()

    def _trim(self) -> int:
        # Caller holds the lock. Keep the newest events; never drop all of them.
        data = _read(self._path)
        kept = _drop_oldest(data, int(self.max_bytes * _TRIM_TO))
        if not kept:  # one append larger than the bound: keep that, whatever it costs
            kept = data[data.rfind(b"\n", 0, len(data) - 1) + 1 :]
        _write_atomic(self._path, kept)
        self._replaced()
        return data.count(b"\n") - kept.count(b"\n")

    def _snapshot(self) -> bytes:
        with self._lock:
            return _read(self.sending_path) + _read(self._path)

    def read_all(self) -> "list[Event]":
        """Every event not yet delivered (including any being sent), oldest first."""
        try:
            return _parse_lines(self._snapshot())
        except OSError:
            return []

    def count(self) -> int:
        """How many events are queued."""
        return len(self.read_all())

    def should_flush(self) -> bool:
        """True when at least 10 events wait, or the oldest has waited an hour."""
        try:
            data = self._snapshot()
        except OSError:
            return False
        found = 0
        oldest: object = None
        for line in data.splitlines():
            try:  # a cheap look, not a full parse: every CLI run asks this
                item = _jsonlite.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                continue
            if found == 0:
                oldest = item.get("timestamp")
            found += 1
            if found >= FLUSH_COUNT:
                return True
        return found > 0 and _age_seconds(oldest) >= FLUSH_AGE_SECONDS

    def truncate(self) -> None:
        """Drop every queued event, including any claimed by a sender."""
        with self._lock:
            for path in (self._path, self.sending_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            self._replaced()

    def sender(self, inherited_fd: "int | None" = None) -> "Sender | None":
        """Become this queue's one sender; None when another sender is at work.

        ``inherited_fd``: the send lock, already held, passed down by the
        process that started this one (see :meth:`Sender.detach`).
        """
        lock = _FileLock(self._path + ".send.lock")
        if inherited_fd is not None:
            lock.adopt(inherited_fd)
            return Sender(self, lock)
        try:
            if lock.acquire(blocking=False):
                return Sender(self, lock)
        except OSError:
            pass
        lock.close()
        return None

    def sender_busy(self) -> bool:
        """Whether a sender is at work on this queue right now."""
        if not os.path.exists(self._path + ".send.lock"):
            return False
        sender = self.sender()
        if sender is None:
            return True
        sender.close()
        return False

    # Used by Sender, which holds the send lock.
    def _claim(self) -> bytes:
        with self._lock:
            pending = _read(self._path)
            if pending:
                if os.path.exists(self.sending_path):
                    merged = _read(self.sending_path)
                    if merged and not merged.endswith(b"\n"):
                        merged += b"\n"
                    _write_atomic(self.sending_path, _drop_oldest(merged + pending, self.max_bytes))
                    os.unlink(self._path)
                else:
                    os.replace(self._path, self.sending_path)
                self._replaced()
            return _read(self.sending_path)

    def _release(self, delivered: int) -> None:
        with self._lock:
            rest = _read(self.sending_path)[delivered:]
            if rest.strip():
                _write_atomic(self.sending_path, rest)
            else:
                try:
                    os.unlink(self.sending_path)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        """Close the files this object keeps open (it stays usable)."""
        self._close_fd()
        self._lock.close()


class Sender:
    """The one sender of a queue: claims events, then releases what was delivered.

    Use as a context manager; leaving it lets the next sender in. Lines not
    released stay queued in ``Q.sending`` and are sent by the next sender.
    """

    def __init__(self, queue: JsonlQueue, lock: _FileLock) -> None:
        self.queue = queue
        self._lock = lock
        self._offset = 0

    def claim(self) -> "list[tuple[int, bytes]]":
        """Take every queued event for sending: ``(end offset, JSON line)`` pairs, oldest first.

        Pass an end offset to :meth:`release` once the lines up to it are done with.
        """
        claimed = self.queue._claim()
        self._offset = 0
        out = []
        pos = 0
        for line in claimed.splitlines(keepends=True):
            pos += len(line)
            if line.strip():
                out.append((pos, line.rstrip(b"\r\n")))
        return out

    def release(self, upto: int) -> None:
        """The claimed bytes before offset ``upto`` are done with (delivered or refused for good)."""
        if upto > self._offset:
            self.queue._release(upto - self._offset)
            self._offset = upto

    def close(self) -> None:
        """Let the next sender in."""
        try:
            self._lock.release()
        finally:
            self._lock.close()

    def lock_fd(self) -> int:
        """The descriptor holding the send lock, for a child process to inherit."""
        return self._lock.fileno()

    def detach(self) -> None:
        """Forget the send lock without unlocking it: a child process that inherited it holds it now."""
        self._lock.close()
        self._lock._mutex.release()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(
        self, exc_type: "type[BaseException] | None", exc: "BaseException | None", tb: "TracebackType | None"
    ) -> None:
        self.close()


class FileQueue(JsonlQueue):
    """A project's event queue: ``<project_root>/.sageox/cache/telemetry.jsonl``.

    Appends write only once the project is initialised (``.sageox/README.md``
    or a ``.sageox/.repo_*`` file exists), as in the reference.
    """

    def __init__(self, project_root: str) -> None:
        if not project_root:
            raise ValueError("project_root must not be empty")
        self.project_root = os.fspath(project_root)
        self._initialised = False
        super().__init__(paths.project_queue_path(self.project_root))

    def _writable(self) -> bool:
        if not self._initialised:
            self._initialised = is_initialised(self.project_root)
        return self._initialised


def is_initialised(project_root: str) -> bool:
    """Whether ``project_root`` has an initialised ``.sageox`` directory."""
    sageox = os.path.join(project_root, ".sageox")
    if os.path.isfile(os.path.join(sageox, "README.md")):
        return True
    try:
        return any(name.startswith(".repo_") for name in os.listdir(sageox))
    except OSError:
        return False
