"""The consent decision: is telemetry on, and which rule said so (CONTRACT.md section 4).

On by default; any one opt-out turns it off, and an opt-out always wins over
a host program asking for telemetry. The rules are checked cheapest first
(environment, then files), and the first that says "off" is the answer.
Between on and off, a user may choose ``local``: events are recorded on the
machine (see :mod:`ox_telemetry.local_record`) and never sent by anyone.
:func:`decide` is the one place they are applied: the client, the commands,
the senders, the daemon and the notice all ask it. The user's own setting is
read and written here, side by side.
"""

import os

from . import _jsonlite, ci, paths, settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RULE_ARGUMENT = "argument"
RULE_DO_NOT_TRACK = "DO_NOT_TRACK"
RULE_SAGEOX_TELEMETRY = "SAGEOX_TELEMETRY"
RULE_CI = "ci"
RULE_USER_CONFIG = "user config"
RULE_PROJECT_CONFIG = "project config"
RULE_DEFAULT = "default"

_YAML_FALSE = frozenset({"false", "no", "off", "n"})
_YAML_TRUE = frozenset({"true", "yes", "on", "y"})
_KEY = "telemetry_enabled:"
_MODE_KEY = "telemetry_mode:"

#: The three answers a user can give (``ox-telemetry mode on|local|off``).
MODE_ON = "on"
MODE_LOCAL = "local"
MODE_OFF = "off"
MODES = (MODE_ON, MODE_LOCAL, MODE_OFF)
_MODE_WORDS = frozenset(MODES)
_YAML_BOOL = _YAML_FALSE | _YAML_TRUE
_CONFIG_LIMIT = 1024 * 1024

# Set by the consent notice in the run that showed it (see hold_sends); read by decide.
_held = False


class Decision:
    """Whether telemetry is enabled, the rule that decided it, and what the callers need with it.

    ``enabled``: events are recorded. ``local``: recorded on this machine
    only, never sent (``enabled`` is then True too). ``held``: enabled, but
    this run showed the consent notice, so its events wait on disk for a later
    run. ``ci``: the CI service detected (or None). ``project_config``: the
    project's ``.sageox/config.json`` when it was read (empty when there is
    none, or an earlier rule decided without it).
    """

    __slots__ = ("ci", "enabled", "held", "local", "project_config", "rule")

    def __init__(
        self, enabled: bool, rule: str, *, held: bool = False, ci: "str | None" = None,
        project_config: "dict[str, Any] | None" = None, local: bool = False,
    ) -> None:
        self.enabled = enabled
        self.rule = rule
        self.held = held
        self.ci = ci
        self.project_config: dict[str, Any] = project_config or {}
        self.local = enabled and local

    @property
    def sends(self) -> bool:
        """Whether anything may leave the machine: what every sender asks before it sends."""
        return self.enabled and not self.local

    @property
    def mode(self) -> str:
        """``on``, ``local`` or ``off``."""
        return MODE_OFF if not self.enabled else MODE_LOCAL if self.local else MODE_ON

    def __repr__(self) -> str:
        return (f"Decision(enabled={self.enabled}, local={self.local}, rule={self.rule!r}, held={self.held}, "
                f"ci={self.ci!r})")


def env_opt_out() -> "str | None":
    """The rule of the environment variable that opts out, if any (the rule is named after the variable)."""
    return settings.opt_out()


def hold_sends(held: bool = True) -> None:
    """Keep this run's events on disk for a later run to send (the consent notice was just shown).

    A flag in this module rather than a question to the notice: a host that
    never shows the notice never imports it.
    """
    global _held
    _held = held


def _read_user_config(path: "str | None") -> str:
    from . import files

    try:
        return files.read_users_own(path or paths.user_config_file(), _CONFIG_LIMIT).decode("utf-8", "replace")
    except OSError:
        return ""


def _scalar(text: str, key: str, valid: "frozenset[str]") -> "str | None":
    """The first valid value of the top-level ``key`` in ``text`` (lowercased, unquoted, no comment), or None."""
    for line in text.splitlines():
        if line.startswith(key):
            value = line.partition(":")[2].split(" #", 1)[0].strip().strip("'\"").lower()
            if value in valid:
                return value
    return None


def _enabled_value(text: str) -> "bool | None":
    value = _scalar(text, _KEY, _YAML_BOOL)
    return None if value is None else value in _YAML_TRUE


def read_user_mode(path: "str | None" = None) -> "str | None":
    """The user's mode (``on``, ``local``, ``off``) from the user config YAML; None when neither key is set.

    Two keys say it: ``telemetry_mode`` (ours) and ``telemetry_enabled`` (the
    contract's, which tools that know no local mode read). When they disagree,
    the one that shares less wins: a hand-written ``telemetry_enabled: false``
    turns off a ``telemetry_mode: on``, and ``local`` stays local whatever an
    older tool wrote into ``telemetry_enabled``.
    """
    text = _read_user_config(path)
    enabled = _enabled_value(text)
    mode = _scalar(text, _MODE_KEY, _MODE_WORDS)
    if mode == MODE_OFF or (enabled is False and mode != MODE_LOCAL):
        return MODE_OFF
    if mode == MODE_LOCAL:
        return MODE_LOCAL
    if mode == MODE_ON or enabled:
        return MODE_ON
    return None


def write_user_setting(enabled: bool, path: "str | None" = None) -> str:
    """Write ``telemetry_enabled: true|false`` in the user config YAML; returns its path.

    A ``telemetry_mode`` already there is set to match (``on`` or ``off``):
    ``enable`` and ``disable`` end a local mode too.
    """
    return write_user_mode(MODE_ON if enabled else MODE_OFF, path)


def write_user_mode(mode: str, path: "str | None" = None) -> str:
    """Write the user's mode in the user config YAML; returns its path.

    ``telemetry_enabled`` is ``true`` only for ``on``: a tool that reads only
    that key (the contract's) sends nothing in local mode either.
    ``telemetry_mode`` is written for ``local``, and kept in step when
    present; a user who never chose local keeps a file with the contract's key
    alone. A line edit, not a YAML round trip (the standard library has no
    YAML): a key is replaced where it is, keeping its comment, or added at the
    end; every other line stays byte for byte.
    """
    from . import files

    if mode not in MODES:
        raise ValueError(f"telemetry mode must be one of {', '.join(MODES)}, not {mode!r}")
    path = path or paths.user_config_file()
    text = files.read_users_own(path, _CONFIG_LIMIT).decode("utf-8", "replace")
    lines = text.splitlines(keepends=True)
    lines = _set_key(lines, _KEY, "true" if mode == MODE_ON else "false", add=True)
    lines = _set_key(lines, _MODE_KEY, mode, add=mode == MODE_LOCAL)
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        st_mode = os.stat(path).st_mode & 0o777
    except OSError:
        st_mode = None  # a new file: 0600
    files.write_atomic(path, "".join(lines).encode("utf-8"))
    if st_mode is not None:
        os.chmod(path, st_mode)
    return path


def _set_key(lines: "list[str]", key: str, value: str, add: bool) -> "list[str]":
    """``lines`` with every top-level ``key`` set to ``value`` (comment kept); appended when missing and ``add``."""
    found = False
    for i, line in enumerate(lines):
        if line.startswith(key):
            body = line.rstrip("\r\n")
            start = body.find(" #")
            while start > 0 and body[start - 1] in " \t":
                start -= 1  # the comment keeps its spacing
            comment = body[start:] if start >= 0 else ""
            lines[i] = f"{key} {value}{comment}{line[len(body):]}"
            found = True
    if add and not found:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{key} {value}\n")
    return lines


def read_project_config(project_root: str) -> "dict[str, Any]":
    """``<project_root>/.sageox/config.json`` as a dict; empty when missing or unreadable."""
    from . import files  # the repository's file: a FIFO there must not hang the CLI, a link is not followed

    try:
        data = _jsonlite.loads(files.read(os.path.join(project_root, ".sageox", "config.json"), _CONFIG_LIMIT))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def decide(
    enabled: "bool | None" = None, project_config: "dict[str, Any] | None" = None, *,
    project_root: "str | None" = None, disable_in_ci: bool = False,
) -> Decision:
    """Apply the rules, cheapest first; no file is read once an earlier rule said "off".

    ``enabled``: the host's wish; False turns telemetry off, True or None
    defer to the user. ``project_config`` (already read) or ``project_root``
    (read here when needed): the project's own opt-out. ``disable_in_ci``:
    off when a CI service is detected. A mode the user wrote names the user
    config as the deciding rule either way. Every "off" is looked for before
    a "local" (``SAGEOX_TELEMETRY=local`` or the user's ``local``) is taken:
    off is the stronger answer.
    """
    service = ci.detect()
    if enabled is False:
        return Decision(False, RULE_ARGUMENT, ci=service)
    rule = env_opt_out()
    if rule:
        return Decision(False, rule, ci=service)
    if disable_in_ci and service:
        return Decision(False, RULE_CI, ci=service)
    user = read_user_mode()
    if user == MODE_OFF:
        return Decision(False, RULE_USER_CONFIG, ci=service)
    if project_config is None:
        project_config = read_project_config(project_root) if project_root else {}
    if project_config.get("telemetry") is False:
        return Decision(False, RULE_PROJECT_CONFIG, ci=service, project_config=project_config)
    if settings.local_only():
        return Decision(True, RULE_SAGEOX_TELEMETRY, held=_held, ci=service, project_config=project_config,
                        local=True)
    rule = RULE_USER_CONFIG if user else RULE_ARGUMENT if enabled else RULE_DEFAULT
    return Decision(True, rule, held=_held, ci=service, project_config=project_config, local=user == MODE_LOCAL)
