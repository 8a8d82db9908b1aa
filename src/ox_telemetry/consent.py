"""The consent decision: is telemetry on, and which rule said so (CONTRACT.md section 4).

On by default; any one opt-out turns it off, and an opt-out always wins over
a host program asking for telemetry. The rules are checked cheapest first
(environment, then files), and the first that says "off" is the answer.
"""

import os

from . import _jsonlite, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RULE_ARGUMENT = "argument"
RULE_DO_NOT_TRACK = "DO_NOT_TRACK"
RULE_SAGEOX_TELEMETRY = "SAGEOX_TELEMETRY"
RULE_USER_CONFIG = "user config"
RULE_PROJECT_CONFIG = "project config"
RULE_DEFAULT = "default"

_OFF_WORDS = frozenset({"false", "0", "off", "no"})
_YAML_FALSE = frozenset({"false", "no", "off", "n"})


class Decision:
    """Whether telemetry is enabled, and the rule that decided it."""

    __slots__ = ("enabled", "rule")

    def __init__(self, enabled: bool, rule: str) -> None:
        self.enabled = enabled
        self.rule = rule

    def __repr__(self) -> str:
        return f"Decision(enabled={self.enabled}, rule={self.rule!r})"


def env_opt_out() -> str | None:
    """The environment variable that opts out, if any."""
    dnt = os.environ.get("DO_NOT_TRACK", "")
    if dnt and dnt.strip().lower() not in ("0", "false"):
        return RULE_DO_NOT_TRACK
    if os.environ.get("SAGEOX_TELEMETRY", "").strip().lower() in _OFF_WORDS:
        return RULE_SAGEOX_TELEMETRY
    return None


def read_user_setting(path: str | None = None) -> bool | None:
    """``telemetry_enabled`` from the user config YAML: True, False, or None when unset.

    Only that top-level key is read, by hand: the standard library has no YAML
    parser and the key is a plain scalar.
    """
    try:
        with open(path or paths.user_config_file(), encoding="utf-8", errors="replace") as f:
            text = f.read(1024 * 1024)
    except OSError:
        return None
    for line in text.splitlines():
        if not line.startswith("telemetry_enabled:"):
            continue
        value = line.partition(":")[2].split(" #", 1)[0].strip().strip("'\"").lower()
        if value in _YAML_FALSE:
            return False
        if value in ("true", "yes", "on", "y"):
            return True
    return None


def read_project_config(project_root: str) -> "dict[str, Any]":
    """``<project_root>/.sageox/config.json`` as a dict; empty when missing or unreadable."""
    from . import files  # the repository's file: a FIFO there must not hang the CLI, a link is not followed

    try:
        data = _jsonlite.loads(files.read(os.path.join(project_root, ".sageox", "config.json"), 1024 * 1024))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def decide(
    enabled: "bool | None" = None, project_config: "dict[str, Any] | None" = None
) -> Decision:
    """Apply the rules. ``enabled=False`` from the host turns telemetry off; True or None defer to the user."""
    if enabled is False:
        return Decision(False, RULE_ARGUMENT)
    rule = env_opt_out()
    if rule:
        return Decision(False, rule)
    if read_user_setting() is False:
        return Decision(False, RULE_USER_CONFIG)
    if project_config and project_config.get("telemetry") is False:
        return Decision(False, RULE_PROJECT_CONFIG)
    return Decision(True, RULE_ARGUMENT if enabled else RULE_DEFAULT)
