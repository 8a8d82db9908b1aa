"""The client side of the daemon socket (CONTRACT.md section 3): one JSON line a message.

Uses ``_socket`` directly: the ``socket`` module costs a CLI ~15 ms to import
on a slow machine, and a Unix-socket connect and write need none of it.
"""

import _socket
import os

from . import _jsonlite, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _connect(timeout: "float | None") -> "_socket.socket | None":
    path = paths.daemon_socket_path()
    if not os.path.exists(path):
        return None  # the common case, and the cheapest answer
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
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
