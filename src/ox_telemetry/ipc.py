"""The client side of the daemon socket (CONTRACT.md section 3): one JSON line a message.

Uses ``_socket`` directly: the ``socket`` module costs a CLI ~15 ms to import
on a slow machine, and a Unix-socket connect and write need none of it.
"""

import _socket
import os
import stat
import sys

from . import _jsonlite, _log, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PEERCRED = getattr(_socket, "SO_PEERCRED", None)  # Linux: struct ucred {pid, uid, gid}


def directory_problem(directory: str) -> "str | None":
    """Why ``directory`` may not hold the daemon socket, or None (also when it does not exist).

    Only a real directory of ours, closed to everyone else (mode 0700), keeps
    another local user from putting a socket of theirs where ours should be.
    """
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"socket directory {directory} cannot be checked: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"socket directory {directory} is not a directory"
    if info.st_uid != os.geteuid():
        return (f"socket directory {directory} is owned by uid {info.st_uid}, not by uid {os.geteuid()}: "
                "another user may have made it to receive your events; remove it")
    if info.st_mode & 0o077:
        return (f"socket directory {directory} is open to other users (mode {info.st_mode & 0o7777:04o}, "
                "must be 0700)")
    return None


def _socket_file_problem(path: str, info: "os.stat_result") -> "str | None":
    if not stat.S_ISSOCK(info.st_mode):
        return f"{path} is not a socket"
    if info.st_uid != os.geteuid():
        return f"socket {path} is owned by uid {info.st_uid}, not by uid {os.geteuid()}"
    return directory_problem(os.path.dirname(path))


def socket_problem() -> "str | None":
    """Why the daemon socket's path may not be used (a squatted or open directory, a foreign socket), or None."""
    path = paths.daemon_socket_path()
    try:
        info = os.lstat(path)
    except OSError:
        return directory_problem(os.path.dirname(path))
    return _socket_file_problem(path, info)


def _connect(timeout: "float | None") -> "_socket.socket | None":
    path = paths.daemon_socket_path()
    try:
        info = os.lstat(path)
    except OSError:
        return None  # the common case, and the cheapest answer
    problem = _socket_file_problem(path, info)
    if problem is not None:
        _log.debug("not using the daemon socket: %s", problem)
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if _PEERCRED is not None:  # the process listening is ours too, not only the file
            uid = int.from_bytes(sock.getsockopt(_socket.SOL_SOCKET, _PEERCRED, 12)[4:8], sys.byteorder)
            if uid != os.geteuid():
                _log.debug("not using the daemon socket: its listener is uid %d", uid)
                sock.close()
                return None
    except OSError:
        sock.close()
        return None
    return sock


def send(message: "dict[str, Any]") -> bool:
    """Write one message without waiting for the daemon; False when no daemon took it."""
    sock = _connect(0.0)  # non-blocking: a busy daemon never holds up the CLI
    if sock is None:
        return False
    try:
        data = (_jsonlite.dumps(message) + "\n").encode("utf-8")
        return sock.send(data) == len(data)
    except OSError:
        return False
    finally:
        sock.close()


def request(message: "dict[str, Any]", timeout: float = 0.05) -> "dict[str, Any] | None":
    """Send one message and read the daemon's one-line answer; None on no daemon, timeout or garbage."""
    sock = _connect(timeout)
    if sock is None:
        return None
    try:
        sock.sendall((_jsonlite.dumps(message) + "\n").encode("utf-8"))
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 1024 * 1024:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        answer = _jsonlite.loads(reply)
        return answer if isinstance(answer, dict) else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
