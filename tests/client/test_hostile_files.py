"""Issue 15 (files, fork, home): what a hostile ``.sageox/``, a fork or a missing home can do to the client.

Everything that could hang runs in a subprocess with a hard timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopback import Endpoint
from ox_telemetry import Client, Event, FileQueue, consent, operations, paths
from ox_telemetry.delivery import Delivery, UploadState
from ox_telemetry.queue import MAX_BYTES, JsonlQueue
from ox_telemetry.transport import UrllibTransport

_SPOOL_NAME = "telemetry-http___127.0.0.1_9.jsonl"


def _cache(project: Path) -> Path:
    return project / ".sageox" / "cache"


def _run(code: str, *args: str, timeout: float = 20, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), **kwargs)  # type: ignore[call-overload, no-any-return]


def _spooled(home: Path) -> str:
    spool = home / ".sageox" / "cache" / _SPOOL_NAME
    return spool.read_text() if spool.exists() else ""


# -- links, FIFOs, devices ----------------------------------------------------------


def test_a_symlinked_queue_is_not_written_through(project: Path, home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    _cache(project).mkdir()
    (_cache(project) / "telemetry.jsonl").symlink_to(outside)
    client = Client("s", project_root=str(project), base_url="http://127.0.0.1:9")
    client.track(Event("kept"))
    client.stop()
    assert outside.read_text() == "precious\n"
    assert "kept" in _spooled(home)  # refused by the project, kept for the user


@pytest.mark.parametrize("link", [".sageox/cache", ".sageox"])
def test_a_symlinked_project_directory_is_not_used(project: Path, home: Path, tmp_path: Path, link: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "README.md").write_text("")  # an "initialised" .sageox elsewhere
    if link == ".sageox":
        for name in os.listdir(project / ".sageox"):
            (outside / name).write_bytes((project / ".sageox" / name).read_bytes())
        (project / ".sageox" / "README.md").unlink()
        (project / ".sageox" / "config.json").unlink()
        (project / ".sageox").rmdir()
    (project / link).symlink_to(outside)
    client = Client("s", project_root=str(project), base_url="http://127.0.0.1:9")
    client.track(Event("kept"))
    client.stop()
    assert sorted(p.name for p in outside.rglob("*")) == sorted(
        ["README.md"] + (["config.json"] if link == ".sageox" else []))
    assert "kept" in _spooled(home)
    info = operations.status(str(project))
    assert str(project / link) in {r["path"] for r in info["refused"]}, info["refused"]


def test_a_symlinked_sending_file_is_not_posted(project: Path, tmp_path: Path, endpoint: Endpoint) -> None:
    outside = tmp_path / "secrets.jsonl"
    outside.write_text(json.dumps({"type": "stolen", "command": "outside", "timestamp": "2026-01-01T00:00:00Z",
                                   "event_id": "e1"}) + "\n")
    queue = FileQueue(str(project))
    queue.append(Event("mine"))
    os.symlink(outside, queue.sending_path)
    Delivery(queue, UrllibTransport(), endpoint.base_url + "/api/v1/telemetry").run()
    assert "stolen" not in [e["type"] for e in endpoint.accepted_events()]
    assert outside.exists() and "stolen" in outside.read_text()


_START = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # an unbounded read of /dev/zero ends here
from ox_telemetry import Client, Event
c = Client("s", project_root=sys.argv[1], base_url="http://127.0.0.1:9")
t = time.perf_counter()
c.start()
c.track(Event("x"))
# This process's own peak (VmHWM): ru_maxrss would carry over the peak of the forked test runner.
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


@pytest.mark.parametrize(("what", "where"), [
    ("fifo", "telemetry.jsonl"), ("fifo", "telemetry.jsonl.sending"), ("fifo", "telemetry.jsonl.lock"),
    ("/dev/zero", "telemetry.jsonl"), ("/dev/zero", "telemetry.jsonl.sending"),
])
def test_a_fifo_or_device_never_hangs_start(project: Path, what: str, where: str) -> None:
    _cache(project).mkdir()
    target = _cache(project) / where
    if what == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to(what)
    out = _run(_START, str(project), timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert int(out.stdout) < 200_000, out.stdout  # KiB: nothing read without bound


def test_a_huge_garbage_line_costs_start_nothing(project: Path) -> None:
    _cache(project).mkdir()
    (_cache(project) / "telemetry.jsonl").write_bytes(b"x" * (50 * 1024 * 1024))
    client = Client("s", project_root=str(project), base_url="http://127.0.0.1:9")
    took = []
    for _ in range(3):
        t = time.perf_counter()
        client.start()
        took.append(time.perf_counter() - t)
    assert min(took) < 0.02, took  # a bounded read: the old whole-file read took 136 ms
    assert FileQueue(str(project)).count() == 0


def test_an_oversized_sending_file_is_read_as_its_newest_whole_lines(project: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("mine"))
    with open(queue.sending_path, "wb") as f:
        f.write(b"y" * (MAX_BYTES + 5) + b"\n")
        f.write(Event("old", event_id="e-old", timestamp="2026-01-01T00:00:00Z").to_json().encode() + b"\n")
    assert sorted(e.type for e in queue.read_all()) == ["mine", "old"]
    assert Delivery(queue, UrllibTransport(), endpoint.base_url + "/api/v1/telemetry").run() == "delivered"
    assert sorted(e["type"] for e in endpoint.accepted_events()) == ["mine", "old"]
    assert queue.read_all() == []


# -- garbage in state files --------------------------------------------------------


def test_a_garbage_lock_neither_kills_the_sender_nor_disable(project: Path, home: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("queued"))
    Path(queue.path + ".lock").write_bytes(b"not a number\xff")
    assert Delivery(queue, UrllibTransport(), endpoint.base_url + "/api/v1/telemetry").run() == "delivered"
    assert [e["type"] for e in endpoint.accepted_events()] == ["queued"]

    queue.append(Event("again"))
    Path(queue.path + ".lock").write_bytes(b"garbage")
    client_id = Path(paths.client_id_path())
    client_id.parent.mkdir(parents=True, exist_ok=True)
    client_id.write_text("5f1c3c7e-2b8e-4d7a-9a55-0c6f1f0e7a11\n")
    Path(paths.ratelimit_path()).write_text("{}")
    out = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "disable", "--project", str(project)],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert not client_id.exists() and not Path(paths.ratelimit_path()).exists()
    assert not Path(queue.path).exists()


@pytest.mark.parametrize("content", [b"[" * 200_000, b"\xff\xfe garbage", b'{"failures": "x"}', b"[1, 2]"])
def test_garbage_in_state_files_is_treated_as_absent(project: Path, home: Path, content: bytes) -> None:
    from ox_telemetry import background, ratelimit

    queue = FileQueue(str(project))
    queue.append(Event("queued"))
    Path(paths.upload_state_path(queue.path)).write_bytes(content)
    state = UploadState.load(queue)
    assert (state.failures, state.next_attempt) == (0, 0.0)
    assert background.backoff_until(queue) == 0.0
    Path(paths.ratelimit_path()).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.ratelimit_path()).write_bytes(content)
    assert ratelimit.allow() is True


# -- temp files and a full disk ----------------------------------------------------


_TRIM_FULL = """
import sys
from ox_telemetry import Client, Event
c = Client("s", project_root=sys.argv[1], base_url="http://127.0.0.1:9")
pad = "p" * 2000
for i in range(int(sys.argv[2])):
    c.track(Event("x", command=str(i), event_id="id-%d" % i, metadata={"pad": pad}))
c.stop()
print("survived")
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_full_during_the_trim_keeps_each_event_in_one_place(tmp_path: Path, home: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1300k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        root = mount / "project"
        (root / ".sageox").mkdir(parents=True)
        (root / ".sageox" / "README.md").write_text("")
        out = _run(_TRIM_FULL, str(root), "1100", timeout=60)
        assert out.returncode == 0 and "survived" in out.stdout, out.stderr
        queued = [json.loads(line)["event_id"]
                  for line in (root / ".sageox" / "cache" / "telemetry.jsonl").read_text().splitlines()]
        spooled = [json.loads(line)["event_id"] for line in _spooled(home).splitlines()]
        assert queued and not set(queued) & set(spooled)
        assert [p.name for p in (root / ".sageox" / "cache").iterdir() if "tmp" in p.name] == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# -- fork --------------------------------------------------------------------------


_FORKS = """
import os, sys, threading, time
from ox_telemetry import Client, Event, FileQueue
c = Client("s", project_root=sys.argv[1], base_url="http://127.0.0.1:9")
stop = threading.Event()
def churn():
    while not stop.is_set():
        c.track(Event("parent"))
t = threading.Thread(target=churn, daemon=True)
t.start()
hangs = lost = 0
for i in range(200):
    pid = os.fork()
    if pid == 0:
        c.track(Event("child", event_id="child-%d" % i))
        # Checked here: the parent's thread fills the queue fast enough to trim this event away later.
        landed = b'"child-%d"' % i in FileQueue(sys.argv[1]).snapshot()
        os._exit(0 if landed else 3)
    deadline = time.monotonic() + 5
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            lost += status != 0
            break
        if time.monotonic() > deadline:
            hangs += 1
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.001)
    if hangs >= 3:
        break  # enough to know
stop.set()
t.join()
print(hangs, lost)
"""


def test_forks_while_another_thread_tracks_never_hang(project: Path) -> None:
    out = _run(_FORKS, str(project), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "0"]  # no child hung, every child's event landed


_MEMORY_FORK = """
import os, sys
from ox_telemetry import Client, Event
c = Client("s", base_url="http://127.0.0.1:9")
for i in range(10):
    c.track(Event("before", event_id="before-%d" % i))
pid = os.fork()
if pid == 0:
    c.track(Event("child", event_id="child"))
    c.stop()
    os._exit(0)
os.waitpid(pid, 0)
c.stop()
"""


def test_events_in_memory_before_a_fork_are_spilled_once(home: Path) -> None:
    out = _run(_MEMORY_FORK, timeout=30)
    assert out.returncode == 0, out.stderr
    ids = [json.loads(line)["event_id"] for line in _spooled(home).splitlines()]
    assert sorted(ids) == sorted([f"before-{i}" for i in range(10)] + ["child"])


# -- no home -----------------------------------------------------------------------


_NO_HOME = """
from ox_telemetry import Client, Event
c = Client("s", base_url="http://127.0.0.1:9")
assert c.is_enabled()
c.start()
c.track(Event("x"))
c.track_async(Event("y"))
c.track_daemon_start_failure("t", "m")
c.flush()
c.stop()
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="a uid without passwd entry needs root")
def test_no_home_and_no_passwd_entry_writes_no_file(tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    tmp_path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src
    out = subprocess.run(
        ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", sys.executable, "-c", _NO_HOME],
        cwd=work, env=env, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert out.stderr == ""
    assert list(work.iterdir()) == []


# -- status and disable ------------------------------------------------------------


def test_status_names_refused_files_in_json_and_text(project: Path, tmp_path: Path) -> None:
    _cache(project).mkdir()
    os.mkfifo(_cache(project) / "telemetry.jsonl")
    (_cache(project) / "telemetry.jsonl.lock").symlink_to(tmp_path / "elsewhere")
    cli = [sys.executable, "-m", "ox_telemetry.cli", "status", "--project", str(project)]
    info = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=30,
                                     env=dict(os.environ), check=True).stdout)
    refused = {r["path"]: r["why"] for r in info["refused"]}
    assert refused.get(str(_cache(project) / "telemetry.jsonl")) == "not a regular file"
    assert refused.get(str(_cache(project) / "telemetry.jsonl.lock")) == "symbolic link"
    text = subprocess.run(cli, capture_output=True, text=True, timeout=30, env=dict(os.environ), check=True).stdout
    assert f"refused:      {_cache(project) / 'telemetry.jsonl.lock'} (symbolic link)" in text


def test_disable_deletes_what_it_can_and_names_what_it_could_not(project: Path, home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "telemetry.jsonl").write_text("not ours to delete\n")
    (project / ".sageox" / "cache").symlink_to(outside)
    spool = JsonlQueue(paths.user_spool_path("http://127.0.0.1:9"))
    spool.append(Event("spooled"))
    Path(spool.path + ".lock").write_text("garbage")
    result = operations.disable(str(project))
    assert not Path(spool.path).exists()
    assert (outside / "telemetry.jsonl").read_text() == "not ours to delete\n"
    assert str(project / ".sageox" / "cache") in {r["path"] for r in result["not_removed"]}
    out = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "disable", "--project", str(project)],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 1 and f"not done: {project / '.sageox' / 'cache'}: symbolic link" in out.stderr
    assert "Traceback" not in out.stderr


_CONFIG_FIFO = """
import sys
from ox_telemetry import Client
print(Client("s", project_root=sys.argv[1], base_url="http://127.0.0.1:9").is_enabled())
"""


def test_a_fifo_project_config_never_hangs_the_client(project: Path) -> None:
    (project / ".sageox" / "config.json").unlink()
    os.mkfifo(project / ".sageox" / "config.json")
    out = _run(_CONFIG_FIFO, str(project), timeout=20)
    assert (out.returncode, out.stdout.strip()) == (0, "True"), out.stderr


@pytest.mark.parametrize("kind", ["hard link", "another user's"])
def test_a_queue_file_that_is_not_ours_is_not_written(project: Path, home: Path, tmp_path: Path, kind: str) -> None:
    if kind == "another user's" and (not hasattr(os, "geteuid") or os.geteuid() != 0):
        pytest.skip("giving a file to another user needs root")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    _cache(project).mkdir()
    queue_file = _cache(project) / "telemetry.jsonl"
    if kind == "hard link":
        os.link(outside, queue_file)
    else:
        queue_file.write_text("")
        os.chown(queue_file, 65534, 65534)
    client = Client("s", project_root=str(project), base_url="http://127.0.0.1:9")
    client.track(Event("kept"))
    client.stop()
    assert outside.read_text() == "precious\n" and queue_file.read_text() in ("precious\n", "")
    assert "kept" in _spooled(home)
    why = {r["path"]: r["why"] for r in operations.status(str(project))["refused"]}[str(queue_file)]
    assert why == ("hard link" if kind == "hard link" else "owned by uid 65534")


def _plant(path: str, outside: Path) -> None:
    """A link where the old code put its temporary file (``<path>.tmp<pid>``)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(outside, f"{path}.tmp{os.getpid()}")


@pytest.mark.parametrize("writer", ["upload state", "rate limit", "user config", "queue trim"])
def test_temporary_files_are_never_written_through_a_planted_link(
    project: Path, home: Path, tmp_path: Path, writer: str
) -> None:
    from ox_telemetry import ratelimit

    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    if writer == "upload state":
        queue = FileQueue(str(project))
        queue.append(Event("x"))
        state = UploadState.load(queue)
        _plant(state.path, outside)
        state.save()
    elif writer == "rate limit":
        _plant(paths.ratelimit_path(), outside)
        ratelimit.allow()
    elif writer == "user config":
        _plant(paths.user_config_file(), outside)
        consent.write_user_setting(False)
    else:
        small = JsonlQueue(str(tmp_path / "q" / "q.jsonl"), max_bytes=400)
        _plant(small.path, outside)
        for i in range(10):
            small.append(Event("x", command=str(i)))
    assert outside.read_text() == "precious\n"


def test_a_linked_project_queue_is_never_handed_to_the_daemon(
    project: Path, tmp_path: Path, stand_in_daemon: list[object]
) -> None:
    outside = tmp_path / "other-project-sageox"
    (outside / "cache").mkdir(parents=True)
    (outside / "README.md").write_text("")
    (outside / "cache" / "telemetry.jsonl").write_text(
        "".join(Event("x", command=str(i)).to_json() + "\n" for i in range(20)))
    for name in os.listdir(project / ".sageox"):
        (project / ".sageox" / name).unlink()
    (project / ".sageox").rmdir()
    (project / ".sageox").symlink_to(outside)
    client = Client("s", project_root=str(project), base_url="http://127.0.0.1:9")
    client.start()
    client.flush()
    client.stop()
    assert [m for m in stand_in_daemon if isinstance(m, dict) and m.get("type") == "flush_queue"] == []
