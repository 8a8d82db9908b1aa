"""Where ox-telemetry keeps its files (CONTRACT.md sections 4 and 5).

Every function reads the environment when called, so a test (or a host that
changes ``HOME``) sees the current answer. Nothing here creates a directory.

Without a home (no absolute ``$HOME`` and no passwd entry) the user's
directories raise :class:`NoHome`, an ``OSError``: every caller already treats
that as "could not", so the client keeps its events in memory and writes
nothing, least of all a ``./~`` in the working directory.
"""

import os
import sys

from . import settings


class NoHome(OSError):
    """The user has no home directory to keep files in."""


def _home() -> str:
    home = settings.home()
    if not home:  # unset, empty or relative: the working directory is nobody's home
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError, OSError):
            home = ""
    if not os.path.isabs(home):
        raise NoHome("no home directory ($HOME unset and no passwd entry)")
    return home


def _xdg_dir(var: str, default: str) -> str:
    return os.path.join(settings.xdg_base(var) or os.path.join(_home(), default), "sageox")


def user_config_dir() -> str:
    """``~/.sageox/config``; with ``OX_XDG_ENABLE=1``, ``$XDG_CONFIG_HOME/sageox``."""
    if settings.xdg_enabled():
        return _xdg_dir("XDG_CONFIG_HOME", ".config")
    return os.path.join(_home(), ".sageox", "config")


def user_config_file() -> str:
    """The user config YAML: ``$OX_USER_CONFIG`` or ``config.yaml`` in the config dir."""
    return settings.user_config_override() or os.path.join(user_config_dir(), "config.yaml")


def user_cache_dir() -> str:
    """Per-user spool for clients without a project: ``~/.sageox/cache`` (XDG: ``$XDG_CACHE_HOME/sageox``)."""
    if settings.xdg_enabled():
        return _xdg_dir("XDG_CACHE_HOME", ".cache")
    return os.path.join(_home(), ".sageox", "cache")


def user_state_dir() -> str:
    """Per-user daemon state (spool, pid file): ``~/.sageox/state`` (XDG: ``$XDG_STATE_HOME/sageox``)."""
    if settings.xdg_enabled():
        return _xdg_dir("XDG_STATE_HOME", os.path.join(".local", "state"))
    return os.path.join(_home(), ".sageox", "state")


def user_data_dir() -> str:
    """Per-user data (the collector's default SQLite file): ``~/.sageox/data`` (XDG: ``$XDG_DATA_HOME/sageox``)."""
    if settings.xdg_enabled():
        return _xdg_dir("XDG_DATA_HOME", os.path.join(".local", "share"))
    return os.path.join(_home(), ".sageox", "data")


def daemon_socket_path() -> str:
    """The delivery daemon's socket.

    ``$OX_TELEMETRY_SOCKET``, else ``$XDG_RUNTIME_DIR/sageox/telemetry.sock``,
    else ``<tmp>/sageox-<uid>/telemetry.sock``.
    """
    explicit = settings.socket_override()
    if explicit:
        return explicit
    runtime = settings.runtime_dir()
    if runtime:
        return os.path.join(runtime, "sageox", "telemetry.sock")
    tmp = settings.tmp_dir() or ("/tmp" if sys.platform != "win32" else _home())
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tmp, f"sageox-{uid}", "telemetry.sock")


_SPOOL_PREFIX, _SPOOL_SUFFIX = "telemetry-", ".jsonl"


def _slug(url: str) -> str:
    # A file name for an endpoint: readable, no separators.
    return "".join(c if c.isalnum() or c in "-." else "_" for c in url)[:120]


def user_spool_path(base_url: str) -> str:
    """The per-user spool of clients without a project that send to ``base_url``: one file per endpoint."""
    return os.path.join(user_cache_dir(), f"{_SPOOL_PREFIX}{_slug(base_url)}{_SPOOL_SUFFIX}")


def user_spool_paths() -> "list[str]":
    """Every per-user spool file present (one per endpoint a client has used), sorted."""
    cache = user_cache_dir()
    try:
        names = sorted(os.listdir(cache))
    except OSError:
        return []
    return [os.path.join(cache, n) for n in names if n.startswith(_SPOOL_PREFIX) and n.endswith(_SPOOL_SUFFIX)]


def is_user_spool_path(path: str) -> bool:
    """Whether ``path`` (absolute, normalised) is a per-user spool: ``telemetry-*.jsonl`` in the user cache dir."""
    name = os.path.basename(path)
    return (
        os.path.dirname(path) == os.path.normpath(user_cache_dir())
        and name.startswith(_SPOOL_PREFIX) and name.endswith(_SPOOL_SUFFIX)
        and len(name) > len(_SPOOL_PREFIX) + len(_SPOOL_SUFFIX)
    )


def upload_state_path(queue_path: str) -> str:
    """What one delivery run of the queue at ``queue_path`` leaves for the next (backoff, last send)."""
    return queue_path + ".state.json"


def project_sageox_dir(project_root: str) -> str:
    """``<project_root>/.sageox``."""
    return os.path.join(project_root, ".sageox")


def project_queue_path(project_root: str) -> str:
    """The contract's queue file: ``<project_root>/.sageox/cache/telemetry.jsonl``."""
    return os.path.join(project_root, ".sageox", "cache", "telemetry.jsonl")


def client_id_path() -> str:
    """The daemon's anonymous client id file."""
    return os.path.join(user_config_dir(), "client_id")


def ratelimit_path() -> str:
    """The daemon-start-failure report rate limit file."""
    return os.path.join(user_config_dir(), "daemon_failure_ratelimit.json")


def daemon_pid_path() -> str:
    """The delivery daemon's pid file (also its one-per-user lock) in the user state dir."""
    return os.path.join(user_state_dir(), "daemon.pid")


def daemon_spool_dir() -> str:
    """The delivery daemon's disk spool: segment files of received events, oldest first."""
    return os.path.join(user_state_dir(), "daemon-spool")


def daemon_log_path() -> str:
    """Where a detached daemon (``ox-telemetry daemon start``) writes its log."""
    return os.path.join(user_state_dir(), "daemon.log")


#: Uploader processes a user may have alive at once, across every project and endpoint.
UPLOADER_SLOTS = 2


def uploader_slot_paths() -> "list[str]":
    """The lock files of the user's uploader slots: an uploader holds one for as long as it lives."""
    return [os.path.join(user_state_dir(), f"uploader-{n}.lock") for n in range(UPLOADER_SLOTS)]


def request_budget_path(url: str) -> str:
    """The user's recent failed requests to ``url`` (a POST URL), shared by every sender of the user."""
    return os.path.join(user_state_dir(), f"requests-{_slug(url)}.json")


def request_budget_lock_path() -> str:
    """The lock every sender of the user takes to look at or spend a request budget."""
    return os.path.join(user_state_dir(), "requests.lock")
