"""One daemon per user: the pid file lock, the socket and its directory, starting and stopping.

The pid file (``<user state dir>/daemon.pid``) is held with an exclusive
``flock`` for the daemon's life: a second daemon cannot take it, and a pid
file left by a crash is recognised as stale because nobody holds its lock.
A socket file that nobody answers on is stale too, and replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import subprocess
import time
from typing import Any

from .. import background, files, ipc, paths
from ..files import FileLock


class LifecycleError(Exception):
    """The daemon cannot run here; ``str()`` says why."""


class AlreadyRunning(LifecycleError):
    """Another daemon of this user holds the pid file or answers on the socket."""

    def __init__(self, pid: int | None, where: str) -> None:
        self.pid = pid
        super().__init__(f"a daemon is already running (pid {pid if pid else 'unknown'}, {where})")


def check_socket_dir(directory: str) -> None:
    """Create ``directory`` with mode 0700, or refuse one the client would refuse (see ipc.directory_problem)."""
    if not os.path.lexists(directory):
        os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # a concurrent start (or another user) made it: check it like any other
            pass
        else:
            os.chmod(directory, 0o700)  # whatever the umask
    problem = ipc.directory_problem(directory)
    if problem is not None:
        raise LifecycleError(problem)


class PidFile:
    """The pid file, locked for as long as this daemon runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        """Lock and write our pid; raises AlreadyRunning when a live daemon holds it (a stale one is replaced)."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        lock = FileLock(self.path)
        if not lock.acquire(blocking=False):
            lock.close()
            raise AlreadyRunning(read_pid(self.path), f"pid file {self.path}")
        os.ftruncate(lock.fileno(), 0)
        os.pwrite(lock.fileno(), b"%d\n" % os.getpid(), 0)
        self._lock = lock

    def release(self) -> None:
        """Remove the pid file and unlock it."""
        if self._lock is not None:
            files.remove(self.path)
            self._lock.release()
            self._lock.close()
            self._lock = None


def read_pid(path: str | None = None) -> int | None:
    """The pid written in the pid file, or None."""
    try:
        return int(files.read(path or paths.daemon_pid_path(), 32).strip())
    except (OSError, ValueError):
        return None


def pid_file_locked(path: str | None = None) -> bool:
    """Whether a live daemon holds the pid file's lock."""
    try:
        fd = files.open_regular(path or paths.daemon_pid_path(), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def bind_socket(path: str) -> tuple[socket.socket, int]:
    """A listening Unix socket at ``path`` with mode 0600 and its file's inode; replaces a stale socket file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise LifecycleError(f"{path} exists and is not a socket")
        running = ping(1.0)
        if running is not None:
            raise AlreadyRunning(running.get("pid"), f"socket {path}")
        os.unlink(path)  # nobody answers: left by a crash
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # never, even for an instant, a socket others may connect to
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
            raise LifecycleError(f"socket path too long for a Unix socket: {path}") from None
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    # A CLI connects without waiting and drops its event when this queue is
    # full, so bursts of short CLIs need room.
    sock.listen(1024)
    sock.setblocking(False)
    return sock, os.lstat(path).st_ino


def remove_socket(path: str, inode: int) -> None:
    """Remove the socket file if it is still ours (a newer daemon may have replaced it)."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def ping(timeout: float = 1.0) -> dict[str, Any] | None:
    """The running daemon's ping answer data, or None when none answers."""
    answer = ipc.request({"type": "ping"}, timeout=timeout)
    if answer and answer.get("success") is True:
        data = answer.get("data")
        return data if isinstance(data, dict) else {}
    return None


def spawn(extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``ox-telemetry daemon run`` detached (own session) and isolated (see
    :func:`~ox_telemetry.background.isolated_command`), its log in the user state dir."""
    log_path = paths.daemon_log_path()
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    log = files.open_regular(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        return subprocess.Popen(
            background.isolated_command("ox_telemetry.cli:main", ["daemon", "run"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True, close_fds=True, env=background.isolated_env(extra_env), cwd="/",
        )
    finally:
        os.close(log)


def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(step)
