"""Files on ground we do not own: the one place that opens, reads, writes, replaces and locks them.

A project's ``.sageox/`` comes with whatever repository the user cloned, and
``/tmp`` is shared with every local user, so nothing found there is taken on
trust: a symlink is never followed, a FIFO or device is never opened for
blocking I/O, a file of another user is never written, every read has a bound,
and a temporary file is created exclusively under an unpredictable name and
removed when its write fails. Whatever is refused raises :class:`UnsafeFile`
(an ``OSError``), which every caller already treats as "could not", and is
remembered in :data:`refused` for ``ox-telemetry status`` to name.

Directories are checked link by link below a root the caller trusts (the
project root the host passed, the user's home); the check is made when a
directory is first used, which covers a hostile repository (its content is
fixed when cloned). Another local user cannot race it: the directories below
the root are the user's own.
"""

import errno
import os
import stat

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: Paths refused in this process, for ``status`` to name (bounded: a hostile tree cannot grow it for ever).
refused: "dict[str, str]" = {}
_MAX_REFUSED = 64
#: This process's id, kept current by a fork hook: objects holding locks or descriptors compare it
#: with the pid they were made in to notice they are in a child, without a system call each time.
pid = os.getpid()


def _after_fork() -> None:
    global pid
    pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class UnsafeFile(OSError):
    """A path where a regular file or directory of ours should be holds something else."""

    path = ""  # what was refused
    why = ""  # why, as ``status`` names it


def _refuse(path: str, why: str) -> UnsafeFile:
    if len(refused) < _MAX_REFUSED:
        refused[path] = why
    exc = UnsafeFile(f"{path}: {why}")
    exc.path, exc.why = path, why
    return exc


def _uid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _check(path: str, st: os.stat_result, want_dir: bool = False) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "symbolic link")
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "not a directory")
    if not want_dir and not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "not a regular file")
    uid = _uid()
    if uid >= 0 and st.st_uid != uid:
        raise _refuse(path, f"owned by uid {st.st_uid}")
    if not want_dir and st.st_nlink > 1:
        raise _refuse(path, "hard link")


def open_regular(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` for a regular file of ours, never through a link, never blocking on a FIFO or device.

    Raises :class:`UnsafeFile` when ``path`` is anything else; other ``OSError`` as ``os.open`` does.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: BSD's answer to O_NOFOLLOW on a link
            raise _refuse(path, "symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # ENXIO: a FIFO without a reader
            raise _refuse(path, "not a regular file") from None
        raise
    try:
        _check(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_file(path: str) -> None:
    """Raise :class:`UnsafeFile` unless ``path`` is missing or a regular file of ours (looked at, never opened)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    _check(path, st)


def read(path: str, limit: int, *, tail: bool = False) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (the last ones with ``tail``); b"" when it is missing."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    return _read_fd(fd, limit, tail)


def read_users_own(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a file the user keeps for themselves (their config, perhaps a link into their
    dotfiles): a link is followed, since only they can make one there, but a FIFO or device is still never
    opened for blocking reads; b"" when it is missing. Raises :class:`UnsafeFile` for anything not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | CLOEXEC)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise _refuse(path, "not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(path, "not a regular file")
    return _read_fd(fd, limit, False)


def _read_fd(fd: int, limit: int, tail: bool) -> bytes:
    try:
        if tail:
            size = os.fstat(fd).st_size
            if size > limit:
                os.lseek(fd, size - limit, os.SEEK_SET)
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` (mode 0600) through a new temporary file; ``sync``: fsync it first.

    The temporary file is created exclusively under a random name beside
    ``path``, and removed when the write fails (a full disk leaves nothing behind).
    """
    tmp = f"{path}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove(path: str) -> bool:
    """Delete ``path`` (a link itself, never its target); True when something was there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def check_dir(path: str, private: bool = False) -> None:
    """Raise :class:`UnsafeFile` unless ``path`` is a real directory of ours (mode 0700 or tighter with ``private``)."""
    st = os.lstat(path)
    _check(path, st, want_dir=True)
    if private and st.st_mode & 0o077:
        raise _refuse(path, f"open to others (mode {stat.S_IMODE(st.st_mode):o})")


def check_dirs_below(root: str, path: str) -> None:
    """:func:`check_dir` every directory from below ``root`` down to ``path`` (``root`` itself is trusted)."""
    root = os.path.abspath(root)
    relative = os.path.relpath(os.path.abspath(path), root)
    if relative == os.curdir:
        return
    if relative.startswith(os.pardir):
        raise _refuse(path, f"outside {root}")
    current = root
    for part in relative.split(os.sep):
        current = os.path.join(current, part)
        check_dir(current)


def make_dirs(root: str, path: str, private: bool = False) -> None:
    """Create ``path`` (mode 0700) below the trusted ``root`` and check every directory on the way.

    Each directory is checked before the next is made in it, so nothing is
    created through a link; ``root`` itself is made as asked when missing.
    """
    root = os.path.abspath(root)
    relative = os.path.relpath(os.path.abspath(path), root)
    if relative.startswith(os.pardir):
        raise _refuse(path, f"outside {root}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    current = root
    for part in () if relative == os.curdir else relative.split(os.sep):
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            pass  # made before, or a link: checked next either way
        check_dir(current)
    if private:
        check_dir(path, private=True)


class FileLock:
    """An exclusive ``flock`` on a small file of ours, also exclusive between threads.

    Fork-safe: a child process never waits on a mutex a parent's thread held at
    the fork, and never shares the parent's lock (its descriptor would share
    the parent's ``flock``); it opens the file anew on first use.
    """

    def __init__(self, path: str) -> None:
        import _thread

        self.path = path
        self._fd = -1
        self._pid = pid
        self.mutex = _thread.allocate_lock()

    def _forked(self) -> None:
        # A child: the parent's mutex may be held for ever and its descriptor holds the parent's lock.
        import _thread

        self._pid = pid
        self.mutex = _thread.allocate_lock()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)  # the parent still holds its own copy: its lock stays
            except OSError:
                pass

    def fileno(self) -> int:
        """The lock file's descriptor, opened on first use (raises :class:`UnsafeFile` for a link or FIFO)."""
        if self._pid != pid:
            self._forked()
        if self._fd < 0:
            self._fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        return self._fd

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False when ``blocking`` is False and another holds it."""
        from fcntl import LOCK_EX, LOCK_NB, flock

        if self._pid != pid:
            self._forked()
        if not self.mutex.acquire(blocking):
            return False
        try:
            flock(self.fileno(), LOCK_EX if blocking else LOCK_EX | LOCK_NB)
        except BlockingIOError:
            self.mutex.release()
            return False
        except BaseException:
            self.mutex.release()
            raise
        return True

    def release(self) -> None:
        """Let the next holder in."""
        from fcntl import LOCK_UN, flock

        try:
            flock(self._fd, LOCK_UN)
        finally:
            self.mutex.release()

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Close the descriptor (which unlocks it unless a child process inherited it)."""
        fd, self._fd = self._fd, -1  # forgotten first: a fork in between leaves the child none to close twice
        if fd >= 0:
            os.close(fd)

    def adopt(self, fd: int) -> None:
        """Take over ``fd``, already locked (inherited from the process that locked it)."""
        self.mutex.acquire()
        self._fd = fd

    def detach(self) -> None:
        """Forget the lock without unlocking it: a child process that inherited it holds it now."""
        self.close()
        self.mutex.release()
