"""Issue 15, item 6: the client talks only to a socket of ours, in a directory of ours closed to others.

Another local user is played by ``setpriv --reuid=65534``: it squats the socket path first and records
whatever reaches it, answering ``success`` to everything as a real attacker would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import cli

from loopback import wait_until
from ox_telemetry import Client, ipc

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SYSTEM_PYTHON is None or shutil.which("setpriv") is None,
    reason="needs root, setpriv and a system python3 to act as another local user",
)

# argv: socket path, record file, ready file. Listens (socket open to all), records every byte, answers.
SQUATTER = r"""
import os, socket, sys
path, record, ready = sys.argv[1:4]
os.makedirs(os.path.dirname(path), exist_ok=True)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(64)
open(ready, "w").close()
while True:
    conn, _ = server.accept()
    conn.settimeout(2)
    try:
        data = conn.recv(65536)
        with open(record, "ab") as f:
            f.write(data)
        conn.sendall(b'{"success":true,"data":{"pid":1}}\n')
    except OSError:
        pass
    conn.close()
"""


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A sticky, world-writable TMPDIR like /tmp; the client's default socket path lies in it."""
    tmp = Path(tempfile.mkdtemp(prefix="oxsq-", dir="/tmp"))
    tmp.chmod(0o1777)
    monkeypatch.delenv("OX_TELEMETRY_SOCKET", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp))
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _squat(tmp: Path, socket_path: Path, dir_mode: int) -> subprocess.Popen[bytes]:
    """The other user's listener at ``socket_path``, in a directory of theirs with ``dir_mode``."""
    socket_path.parent.mkdir(mode=dir_mode)
    socket_path.parent.chmod(dir_mode)
    os.chown(socket_path.parent, 65534, 65534)
    ready = tmp / "ready"
    proc = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(SYSTEM_PYTHON), "-I", "-S", "-c",
         SQUATTER, str(socket_path), str(tmp / "record"), str(ready)],
        cwd=str(tmp), stdin=subprocess.DEVNULL,
    )
    assert wait_until(lambda: ready.exists() or proc.poll() is not None, 10) and proc.poll() is None
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(10)


def _record(tmp: Path) -> bytes:
    try:
        return (tmp / "record").read_bytes()
    except FileNotFoundError:
        return b""


@pytest.mark.parametrize("dir_mode", [0o755, 0o700, 0o777])
def test_a_squatted_socket_path_is_never_used_and_is_reported(shared_tmp: Path, dir_mode: int) -> None:
    socket_path = shared_tmp / f"sageox-{os.getuid()}" / "telemetry.sock"
    proc = _squat(shared_tmp, socket_path, dir_mode)
    try:
        Client("sess", version="1.0").send_to_daemon("secret-event", {"path": "/home/me/project"})
        assert ipc.send({"type": "telemetry", "payload": {"event": "secret-event"}}) is False
        assert ipc.request({"type": "ping"}, timeout=1.0) is None  # a squatter's "success" is never believed
        assert _record(shared_tmp) == b""  # nothing ever reached the other user
        problem = ipc.socket_problem()
        assert problem is not None and str(socket_path.parent) in problem and "uid 65534" in problem

        started = cli("start", timeout=30)
        assert started.returncode == 1
        assert f"socket directory {socket_path.parent} is owned by uid 65534" in started.stderr
        status = cli("status", timeout=30)
        assert status.returncode == 3 and "owned by uid 65534" in status.stdout
        assert _record(shared_tmp) == b""
    finally:
        _stop(proc)


def test_a_socket_file_of_ours_with_another_users_listener_is_not_used(shared_tmp: Path) -> None:
    # The file and its directory pass every check; only the listener's uid (SO_PEERCRED) gives it away.
    theirs = shared_tmp / "theirs" / "telemetry.sock"
    proc = _squat(shared_tmp, theirs, 0o755)
    ours = shared_tmp / f"sageox-{os.getuid()}"
    ours.mkdir(mode=0o700)
    os.rename(theirs, ours / "telemetry.sock")
    os.lchown(ours / "telemetry.sock", os.geteuid(), os.getegid())
    try:
        assert ipc.send({"type": "telemetry", "payload": {"event": "secret-event"}}) is False
        assert ipc.request({"type": "ping"}, timeout=1.0) is None
        assert _record(shared_tmp) == b""
        assert ipc.socket_problem() is None
    finally:
        _stop(proc)


def test_the_usual_case_passes_every_check(shared_tmp: Path) -> None:
    assert ipc.socket_problem() is None  # nothing there yet: nothing wrong
    assert ipc.send({"type": "telemetry", "payload": {"event": "e"}}) is False
