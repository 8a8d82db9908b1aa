"""start / stop / status, one daemon per user, stale files, permissions, peer uid."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, cli, read_line, request, status

from loopback import Endpoint, wait_until
from ox_telemetry import paths


def test_start_status_stop(daemon_env: Endpoint, home: Path) -> None:
    started = cli("start")
    assert started.returncode == 0, started.stderr
    assert "daemon started" in started.stdout
    sock_path = os.environ["OX_TELEMETRY_SOCKET"]
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o700
    try:
        again = cli("start")
        assert again.returncode == 0
        assert "already running" in again.stdout

        shown = cli("status", "--json")
        assert shown.returncode == 0
        data = json.loads(shown.stdout)
        for key in ("pid", "uptime_s", "socket", "endpoint", "interval_s", "received", "delivered", "spooled",
                    "dropped", "last_error", "last_success", "client_id", "version"):
            assert key in data, key
        assert data["running"] is True and data["socket"] == sock_path
        assert data["endpoint"] == daemon_env.base_url + "/tevents"
        assert data["interval_s"] == pytest.approx(0.1)
        # The client id was created, mode 0600, and is the one uploads carry.
        id_file = Path(paths.client_id_path())
        assert id_file.read_text().strip() == data["client_id"]
        assert stat.S_IMODE(id_file.stat().st_mode) == 0o600
        assert Path(paths.daemon_pid_path()).read_text().strip() == str(data["pid"])
        text = cli("status")
        assert "received:" in text.stdout and data["client_id"] in text.stdout
        # Its own app:startup event reaches the endpoint.
        assert wait_until(lambda: any(e["event"] == "app:startup" for e in daemon_env.accepted_events()))
        body = next(r.body for r in daemon_env.requests if r.status == 200)
        assert body["clientid"] == data["client_id"]
        assert daemon_env.requests[0].path == "/tevents"
        assert daemon_env.requests[0].headers.get("content-encoding") == "gzip"
        startup = next(e for e in daemon_env.accepted_events() if e["event"] == "app:startup")
        assert set(startup) == {"uuid", "ts", "tslocal", "event", "props"}
        assert startup["props"]["app_type"] == "ox-telemetry-daemon"
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not os.path.exists(sock_path)
    assert not os.path.exists(paths.daemon_pid_path())
    assert wait_until(lambda: any(e["event"] == "app:shutdown" for e in daemon_env.accepted_events()))
    assert cli("status").returncode == 3
    assert cli("stop").stdout.strip() == "daemon not running"


def test_second_run_refused_while_first_runs(daemon: DaemonProcess) -> None:
    second = cli("run")
    assert second.returncode == 1
    assert f"already running (pid {daemon.pid}" in second.stderr
    assert request("ping")["success"] is True  # type: ignore[index]


def test_stale_socket_and_pid_file_are_replaced(daemon_env: Endpoint, tmp_path: Path) -> None:
    sock_path = os.environ["OX_TELEMETRY_SOCKET"]
    os.makedirs(os.path.dirname(sock_path), mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)  # a socket file nobody listens on, as a crash leaves it
    stale.close()
    os.makedirs(os.path.dirname(paths.daemon_pid_path()), exist_ok=True)
    Path(paths.daemon_pid_path()).write_text("999999\n")
    proc = DaemonProcess(tmp_path / "d.log").start()
    try:
        assert status()["pid"] == proc.pid
    finally:
        assert proc.stop() == 0


def test_kill9_leaves_files_the_next_start_replaces(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.kill9()
    assert os.path.exists(os.environ["OX_TELEMETRY_SOCKET"])
    started = cli("start")
    assert started.returncode == 0 and "daemon started" in started.stdout, started.stderr
    assert cli("stop").returncode == 0


def test_refuses_a_world_writable_socket_directory(sock_dir: Path, daemon_env: Endpoint) -> None:
    shared = sock_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    os.environ["OX_TELEMETRY_SOCKET"] = str(shared / "telemetry.sock")  # restored by monkeypatch's teardown
    result = cli("run")
    assert result.returncode == 1
    assert f"socket directory {shared} is open to other users (mode 0777, must be 0700)" in result.stderr
    assert cli("start").returncode == 1
    assert not (shared / "telemetry.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another user's")
def test_refuses_a_socket_directory_of_another_user(sock_dir: Path, daemon_env: Endpoint) -> None:
    theirs = sock_dir / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    os.environ["OX_TELEMETRY_SOCKET"] = str(theirs / "telemetry.sock")
    result = cli("run")
    assert result.returncode == 1
    assert "is owned by uid 65534" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("python3", path="/usr/bin:/bin"),
                    reason="needs root and a system python3 to connect as another user")
def test_connections_from_other_users_are_closed(daemon: DaemonProcess) -> None:
    sock_path = os.environ["OX_TELEMETRY_SOCKET"]
    for directory in (os.path.dirname(sock_path), os.path.dirname(os.path.dirname(sock_path))):
        os.chmod(directory, 0o711)  # let the other user reach the socket, for this test only
    os.chmod(sock_path, 0o666)
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1])\n"
        "try:\n    s.sendall(b'{\"type\":\"ping\"}\\n')\n    data=s.recv(100)\nexcept OSError:\n    data=b''\n"
        "print(repr(data))\n"
    )
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    result = subprocess.run([python, "-c", code, sock_path], user=65534, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "b''"  # closed without an answer
    with socket.socket(socket.AF_UNIX) as mine:
        mine.connect(sock_path)
        mine.sendall(b'{"type":"ping"}\n')
        assert read_line(mine)["success"] is True  # type: ignore[index]
    assert wait_until(lambda: "closed a connection from uid 65534" in daemon.log(), 5)


@pytest.mark.parametrize("trap", ["client_id", "cursor", "segment"])
def test_a_fifo_in_the_daemons_files_neither_hangs_nor_misleads_it(
    daemon_env: Endpoint, tmp_path: Path, trap: str
) -> None:
    spool = Path(paths.daemon_spool_dir())
    spool.mkdir(parents=True, mode=0o700)
    if trap == "client_id":
        Path(paths.client_id_path()).parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.mkfifo(paths.client_id_path())
    else:  # a spool with one event waiting, then a FIFO where the daemon reads
        (spool / "000000000001.jsonl").write_bytes(
            b'{"uuid":"u1","ts":1,"tslocal":"x","msg":{"type":"telemetry","payload":{"event":"waiting"}}}\n')
        os.mkfifo(spool / ("cursor" if trap == "cursor" else "000000000002.jsonl"))
    daemon = DaemonProcess(tmp_path / "d.log")
    try:
        daemon.start(timeout=10)  # a daemon stuck opening a FIFO never answers: a hard timeout, then killed
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(os.environ["OX_TELEMETRY_SOCKET"])
            sock.sendall(b'{"type":"telemetry","payload":{"event":"after"}}\n')
        assert wait_until(lambda: any(e["event"] == "after" for e in daemon_env.accepted_events()), 10), daemon.log()
        events = [e["event"] for e in daemon_env.accepted_events()]
        assert ("waiting" in events) is (trap != "client_id")
        if trap == "client_id":  # a fresh id, in a regular file now
            assert stat.S_ISREG(os.lstat(paths.client_id_path()).st_mode)
            assert status()["client_id"] == Path(paths.client_id_path()).read_text().strip()
        daemon.stop()
    finally:
        daemon.close()
