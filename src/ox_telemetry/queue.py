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

Every file goes through :mod:`ox_telemetry.files`: a link, FIFO, device or
another user's file where one of ours should be is refused, never followed;
the queue's directories are checked once, when the queue is first used. Reads
are bounded by the queue's bound: a larger file is read as its newest whole lines.
"""

import os
import time
from fcntl import LOCK_EX, LOCK_UN, flock

from . import _jsonlite, _log, _time, files, paths
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

_O_APPEND = os.O_RDWR | os.O_APPEND | os.O_CREAT


def _read(path: str, limit: int) -> bytes:
    """The newest whole lines of ``path`` that fit in ``limit`` bytes; b"" when it is missing or refused."""
    try:
        data = files.read(path, limit + 1, tail=True)
    except files.UnsafeFile:
        return b""  # named by ``status``; a hostile file is skipped, never fatal
    if len(data) > limit:
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    return data


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


def _drop_oldest(data: bytes, keep_bytes: int) -> bytes:
    """The newest whole lines of ``data`` that fit in ``keep_bytes``."""
    if len(data) <= keep_bytes:
        return data
    cut = data.find(b"\n", len(data) - keep_bytes - 1)
    return data[cut + 1 :] if cut >= 0 else b""


class JsonlQueue:
    """A bounded, multi-process JSONL event queue at ``path``.

    The building block of :class:`FileQueue` (a project's queue) and of the
    per-user spool; also used by the uploader and the delivery daemon.
    ``root``: the directory trusted as it is (default: the parent of the
    queue's directory); every directory below it is checked on first use.
    """

    def __init__(self, path: str, max_bytes: int = MAX_BYTES, root: "str | None" = None) -> None:
        self._path = path
        self.max_bytes = max_bytes
        self.sending_path = path + ".sending"
        directory = os.path.dirname(os.path.abspath(path))
        self._directory = directory
        self._root = root if root is not None else os.path.dirname(directory)
        self._dirs_ok = False
        self._lock = files.FileLock(path + ".lock")
        self._fd = -1  # ``Q`` kept open for appends
        self._generation = b""  # the lock file's counter when ``_fd`` was opened
        self._pid = files.pid  # the process ``_fd`` belongs to

    @property
    def path(self) -> str:
        """The queue file."""
        return self._path

    def writable(self) -> bool:
        """Whether appends are written (a project queue: once the project is initialised and its directories ours)."""
        return True

    def check(self) -> None:
        """Raise :class:`~ox_telemetry.files.UnsafeFile` for the first of this queue's files that is not ours.

        Looks without opening or creating anything (``ox-telemetry status``);
        every refusal, not only the first, is left in :data:`ox_telemetry.files.refused`.
        """
        self._check_dirs(create=False)
        first: files.UnsafeFile | None = None
        for path in (self._path, self.sending_path, self._path + ".lock", self._path + ".send.lock",
                     paths.upload_state_path(self._path)):
            try:
                files.check_file(path)
            except files.UnsafeFile as exc:
                first = first or exc
        if first is not None:
            raise first

    def usable(self) -> bool:
        """Whether the queue's directories exist and are ours (checked once, without creating anything)."""
        try:
            self._check_dirs(create=False)
        except OSError:
            return False
        return True

    def _check_dirs(self, create: bool) -> None:
        # Once per queue: a cloned repository's directories are what they were when cloned, and ours
        # below them cannot be changed by another user. FileNotFoundError when missing and not ``create``.
        if not self._dirs_ok:
            if create:
                files.make_dirs(self._root, self._directory)
            else:
                files.check_dirs_below(self._root, self._directory)
            self._dirs_ok = True

    def append(self, event: Event) -> None:
        """Append one event (stamping ``timestamp`` if None). Raises OSError when the disk refuses.

        An event without an ``event_id`` is written with a new one (the event
        itself keeps none, so appending it twice records two events).
        """
        if not self.writable():
            return
        if event.timestamp is None:
            event.timestamp = _time.now()
        line = event.to_json(None if event.event_id else {"event_id": new_event_id()})
        self.append_line(line.encode("ascii"))

    def append_line(self, line: bytes) -> None:
        """Append one already-encoded event (without its newline)."""
        if self.writable():
            self.write(line + b"\n")

    def append_lines(self, lines: "list[bytes]") -> int:
        """Append encoded events (without newlines) in one write; returns how many old lines the bound dropped."""
        if not lines or not self.writable():
            return 0
        return self.write(b"\n".join(lines) + b"\n")

    def write(self, data: bytes) -> int:
        """Append encoded events, each ending in a newline, in one write; returns how many old lines were dropped.

        Raises OSError (:class:`~ox_telemetry.files.UnsafeFile` for a file
        that is not ours) when the event could not be written; once written,
        it stays written (a failed trim leaves the queue over its bound until
        the next append), so a caller never keeps it elsewhere too.
        """
        if not self._dirs_ok:
            self._check_dirs(create=True)
        try:
            return self._append(data)
        except FileNotFoundError:  # the directory went away: make it again
            self._dirs_ok = False
            self._check_dirs(create=True)
            return self._append(data)

    def _append(self, data: bytes) -> int:
        # Every call of every event goes through here: kept to the syscalls it needs
        # (lock, read the generation, write, learn the size, unlock). The lock notices a fork by itself,
        # the descriptor by the pid files.py keeps current (no getpid() per event).
        lock = self._lock
        lock_fd = lock.fileno()
        lock.mutex.acquire()
        try:
            flock(lock_fd, LOCK_EX)
            try:
                generation = os.pread(lock_fd, 32, 0)
                fd = self._fd
                if fd < 0 or generation != self._generation or self._pid != files.pid:
                    fd = self._reopen(generation)
                written = os.write(fd, data)
                size = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: the end of the file, our line included
                if written != len(data):  # disk full: take the fragment back
                    os.ftruncate(fd, size - written)
                    raise OSError(28, "short write to telemetry queue")
                if size <= self.max_bytes:
                    return 0
                try:
                    return self._trim()
                except OSError:  # full disk: our line is written, the bound waits for the next append
                    return 0
            finally:
                flock(lock_fd, LOCK_UN)
        finally:
            lock.mutex.release()

    def _reopen(self, generation: bytes) -> int:
        # Caller holds the lock; ``Q`` was replaced (or never opened) since the last append, or this
        # is a forked child, whose inherited descriptor is the parent's to use.
        self._close_fd()
        self._pid = files.pid
        fd = files.open_regular(self._path, _O_APPEND)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # a line torn by a crash stays apart from ours
        self._fd, self._generation = fd, generation
        return fd

    def _close_fd(self) -> None:
        # Forgotten before it is closed: a fork in between leaves the child no descriptor number to
        # close twice (which could be another file's by then).
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def _replaced(self) -> None:
        # Caller holds the lock and has just replaced or removed ``Q``: tell every writer.
        fd = self._lock.fileno()
        try:
            count = int(os.pread(fd, 32, 0) or b"0") + 1
        except ValueError:  # garbage counts as 0; the content changes all the same, which is what writers look at
            count = 1
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d" % count, 0)
        self._close_fd()

    def _trim(self) -> int:
        # Caller holds the lock. Keep the newest events; never drop all of them.
        data = _read(self._path, self.max_bytes)
        kept = _drop_oldest(data, int(self.max_bytes * _TRIM_TO))
        if not kept:  # one append larger than the bound: keep that, whatever it costs
            kept = data[data.rfind(b"\n", 0, len(data) - 1) + 1 :]
        files.write_atomic(self._path, kept)
        self._replaced()
        return data.count(b"\n") - kept.count(b"\n")

    def snapshot(self) -> bytes:
        """The raw lines not yet delivered (``Q.sending``'s, then ``Q``'s), each file read within the bound.

        Raises OSError (FileNotFoundError when the queue's directory is missing).
        """
        self._check_dirs(create=False)
        with self._lock:
            sending = _read(self.sending_path, self.max_bytes)
            if sending and not sending.endswith(b"\n"):
                sending += b"\n"
            return sending + _read(self._path, self.max_bytes)

    def read_all(self) -> "list[Event]":
        """Every event not yet delivered (including any being sent), oldest first."""
        try:
            return _parse_lines(self.snapshot())
        except OSError:
            return []

    def count(self) -> int:
        """How many events are queued."""
        return len(self.read_all())

    def should_flush(self) -> bool:
        """True when at least 10 events wait, or the oldest has waited an hour."""
        try:
            data = self.snapshot()
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
        """Drop every queued event, including any claimed by a sender.

        Raises :class:`~ox_telemetry.files.UnsafeFile` (deleting nothing) when
        the queue's directory is not ours; a lock file that is not ours is
        skipped (none of ours can hold it) and the events deleted all the same.
        """
        try:
            self._check_dirs(create=False)
        except FileNotFoundError:
            return
        try:
            with self._lock:
                self._remove_files()
                self._replaced()
        except files.UnsafeFile:
            self._remove_files()

    def _remove_files(self) -> None:
        for path in (self._path, self.sending_path):
            files.remove(path)

    def sender(self, inherited_fd: "int | None" = None) -> "Sender | None":
        """Become this queue's one sender; None when another sender is at work.

        ``inherited_fd``: the send lock, already held, passed down by the
        process that started this one (see :meth:`Sender.detach`).
        """
        lock = files.FileLock(self._path + ".send.lock")
        if inherited_fd is not None:
            lock.adopt(inherited_fd)
            return Sender(self, lock)
        try:
            self._check_dirs(create=False)
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
        # A ``Q.sending`` that is not ours reads as empty and is replaced by a file of ours (never written
        # through); ``Q.sending`` larger than the bound is read as its newest lines, the same ones each time.
        with self._lock:
            pending = _read(self._path, self.max_bytes)
            if pending:
                if os.path.lexists(self.sending_path):
                    merged = _read(self.sending_path, self.max_bytes)
                    if merged and not merged.endswith(b"\n"):
                        merged += b"\n"
                    files.write_atomic(self.sending_path, _drop_oldest(merged + pending, self.max_bytes))
                    os.unlink(self._path)
                else:
                    os.replace(self._path, self.sending_path)
                self._replaced()
            return _read(self.sending_path, self.max_bytes)

    def _release(self, delivered: int) -> None:
        with self._lock:
            rest = _read(self.sending_path, self.max_bytes)[delivered:]
            if rest.strip():
                files.write_atomic(self.sending_path, rest)
            else:
                files.remove(self.sending_path)

    def close(self) -> None:
        """Close the files this object keeps open (it stays usable)."""
        self._close_fd()
        self._lock.close()


class Sender:
    """The one sender of a queue: claims events, then releases what was delivered.

    Use as a context manager; leaving it lets the next sender in. Lines not
    released stay queued in ``Q.sending`` and are sent by the next sender.
    """

    def __init__(self, queue: JsonlQueue, lock: files.FileLock) -> None:
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
        self._lock.detach()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(
        self, exc_type: "type[BaseException] | None", exc: "BaseException | None", tb: "TracebackType | None"
    ) -> None:
        self.close()


#: Why a project's events go to the user spool when its ``.sageox/`` is not initialised.
NOT_INITIALISED = "project not initialised (no .sageox/README.md or .sageox/.repo_*)"


class FileQueue(JsonlQueue):
    """A project's event queue: ``<project_root>/.sageox/cache/telemetry.jsonl``.

    Appends write only once the project is initialised (``.sageox/README.md``
    or a ``.sageox/.repo_*`` file exists), as in the reference, and its
    directories are ours; otherwise the client keeps the events in the user
    spool, and :meth:`refusal` says why.
    """

    def __init__(self, project_root: str) -> None:
        if not project_root:
            raise ValueError("project_root must not be empty")
        self.project_root = os.fspath(project_root)
        self._ready = False
        self._refused = ""  # why the directories were refused, for good
        super().__init__(paths.project_queue_path(self.project_root), root=self.project_root)

    def writable(self) -> bool:
        return self._ready or not self.refusal()

    def refusal(self, create: bool = True) -> str:
        """Why this project's events go to the user spool instead ("" when they are written here).

        The client (through :meth:`writable`) and ``ox-telemetry status`` both
        ask this, so they agree. ``create=False`` makes no directory: a cache
        directory not made yet is no refusal, the first append makes it.
        """
        if self._ready:
            return ""
        if self._refused:
            return self._refused
        sageox = paths.project_sageox_dir(self.project_root)
        try:
            files.check_dir(sageox)
        except FileNotFoundError:
            return NOT_INITIALISED
        except OSError as exc:  # a linked .sageox: never written through
            return self._refuse(exc)
        if not _initialised(sageox):
            return NOT_INITIALISED
        try:
            self._check_dirs(create=create)
        except OSError as exc:  # a linked .sageox/cache, a read-only project: events go elsewhere
            if isinstance(exc, FileNotFoundError) and not create:
                return ""
            return self._refuse(exc)
        if create:
            self._ready = True
        return ""

    def _refuse(self, exc: OSError) -> str:
        why = exc.why if isinstance(exc, files.UnsafeFile) else exc.strerror or exc.__class__.__name__
        self._refused = f"project queue refused ({why})"
        _log.debug("project queue not used: %r", exc)
        return self._refused


def _initialised(sageox: str) -> bool:
    """Whether the (checked) ``.sageox`` directory ``sageox`` is initialised, as the reference decides it."""
    if os.path.isfile(os.path.join(sageox, "README.md")):
        return True
    try:
        return any(name.startswith(".repo_") for name in os.listdir(sageox))
    except OSError:
        return False
