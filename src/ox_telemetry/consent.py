"""The consent decision: is telemetry on, and which rule said so (CONTRACT.md section 4).

On by default; any one opt-out turns it off, and an opt-out always wins over
a host program asking for telemetry. The rules are checked cheapest first
(environment, then files), and the first that says "off" is the answer.
:func:`decide` is the one place they are applied: the client, the commands,
the daemon and the notice all ask it. The user's own setting is read and
written here, side by side.
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
_CONFIG_LIMIT = 1024 * 1024

# Set by the consent notice in the run that showed it (see hold_sends); read by decide.
_held = False


class Decision:
    """Whether telemetry is enabled, the rule that decided it, and what the callers need with it.

    ``held``: enabled, but this run showed the consent notice, so its events
    wait on disk for a later run. ``ci``: the CI service detected (or None).
    ``project_config``: the project's ``.sageox/config.json`` when it was read
    (empty when there is none, or an earlier rule decided without it).
    """

    __slots__ = ("ci", "enabled", "held", "project_config", "rule")

    def __init__(
        self, enabled: bool, rule: str, *, held: bool = False, ci: "str | None" = None,
        project_config: "dict[str, Any] | None" = None,
    ) -> None:
        self.enabled = enabled
        self.rule = rule
        self.held = held
        self.ci = ci
        self.project_config: dict[str, Any] = project_config or {}

    def __repr__(self) -> str:
        return f"Decision(enabled={self.enabled}, rule={self.rule!r}, held={self.held}, ci={self.ci!r})"


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


def read_user_setting(path: "str | None" = None) -> "bool | None":
    """``telemetry_enabled`` from the user config YAML: True, False, or None when unset.

    Only that top-level key is read, by hand: the standard library has no YAML
    parser and the key is a plain scalar.
    """
    try:
        with open(path or paths.user_config_file(), encoding="utf-8", errors="replace") as f:
            text = f.read(_CONFIG_LIMIT)
    except OSError:
        return None
    for line in text.splitlines():
        if not line.startswith(_KEY):
            continue
        value = line.partition(":")[2].split(" #", 1)[0].strip().strip("'\"").lower()
        if value in _YAML_FALSE:
            return False
        if value in _YAML_TRUE:
            return True
    return None


def write_user_setting(enabled: bool, path: "str | None" = None) -> str:
    """Write ``telemetry_enabled: true|false`` in the user config YAML; returns its path.

    A line edit, not a YAML round trip (the standard library has no YAML):
    the top-level key is replaced where it is, keeping its comment, or added
    at the end; every other line stays byte for byte.
    """
    from . import files

    path = path or paths.user_config_file()
    value = "true" if enabled else "false"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    lines = text.splitlines(keepends=True)
    found = False
    for i, line in enumerate(lines):
        if line.startswith(_KEY):
            body = line.rstrip("\r\n")
            start = body.find(" #")
            while start > 0 and body[start - 1] in " \t":
                start -= 1  # the comment keeps its spacing
            comment = body[start:] if start >= 0 else ""
            lines[i] = f"{_KEY} {value}{comment}{line[len(body):]}"
            found = True
    if not found:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{_KEY} {value}\n")
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = None  # a new file: 0600
    files.write_atomic(path, "".join(lines).encode("utf-8"))
    if mode is not None:
        os.chmod(path, mode)
    return path


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
    off when a CI service is detected. A ``telemetry_enabled`` the user wrote
    names the user config as the deciding rule either way.
    """
    service = ci.detect()
    if enabled is False:
        return Decision(False, RULE_ARGUMENT, ci=service)
    rule = env_opt_out()
    if rule:
        return Decision(False, rule, ci=service)
    if disable_in_ci and service:
        return Decision(False, RULE_CI, ci=service)
    user = read_user_setting()
    if user is False:
        return Decision(False, RULE_USER_CONFIG, ci=service)
    if project_config is None:
        project_config = read_project_config(project_root) if project_root else {}
    if project_config.get("telemetry") is False:
        return Decision(False, RULE_PROJECT_CONFIG, ci=service, project_config=project_config)
    rule = RULE_USER_CONFIG if user else RULE_ARGUMENT if enabled else RULE_DEFAULT
    return Decision(True, rule, held=_held, ci=service, project_config=project_config)
