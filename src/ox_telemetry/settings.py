"""Every setting read from the environment, and the parsers they share.

One place owns each variable's name, default and syntax, so the client, the
uploader, the daemon and the collector agree on what ``1``, ``yes`` or
``1h30m`` means. Each function reads the environment when called (a test or a
host that changes it sees the current answer). Standard library only, and
nothing heavier than :mod:`os`: the client imports this.
"""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Where a CLI's events go without ``base_url`` or ``$SAGEOX_ENDPOINT``.
DEFAULT_BASE_URL = "https://sageox.ai"
#: The path of the CLI events endpoint below a base URL (CONTRACT.md section 3).
TELEMETRY_PATH = "/api/v1/telemetry"
#: Where the daemon's events go without ``$SAGEOX_TELEMETRY_ENDPOINT``.
DEFAULT_DAEMON_ENDPOINT = "https://telemetry.sageox.ai/tevents"

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def flag(value: "str | None") -> "bool | None":
    """``1/true/yes/on`` is True, ``0/false/no/off`` False (any case, spaces ignored), anything else None."""
    word = (value or "").strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def truthy(value: "str | None") -> bool:
    """Set to anything but empty or a false word (``0/false/no/off``): how CI services' variables are read."""
    return bool((value or "").strip()) and flag(value) is not False


def opt_out() -> "str | None":
    """The variable that opts the user out (CONTRACT.md section 4), or None.

    ``DO_NOT_TRACK`` set to anything but empty, ``0`` or ``false``;
    ``SAGEOX_TELEMETRY`` set to ``false``, ``0``, ``off`` or ``no``.
    """
    if (os.environ.get("DO_NOT_TRACK") or "").strip().lower() not in ("", "0", "false"):
        return "DO_NOT_TRACK"
    if flag(os.environ.get("SAGEOX_TELEMETRY")) is False:
        return "SAGEOX_TELEMETRY"
    return None


def local_only() -> bool:
    """``SAGEOX_TELEMETRY=local``: record on this machine, send nothing (in the environment it is set in)."""
    return (os.environ.get("SAGEOX_TELEMETRY") or "").strip().lower() == "local"


def debug() -> bool:
    """``OX_TELEMETRY_DEBUG``: print events instead of sending them (client), log verbosely (daemon)."""
    return flag(os.environ.get("OX_TELEMETRY_DEBUG")) is True


def base_url(explicit: "str | None" = None) -> str:
    """A client's endpoint base URL: ``explicit``, else ``$SAGEOX_ENDPOINT``, else the default; no trailing slash."""
    if explicit is None:
        explicit = os.environ.get("SAGEOX_ENDPOINT") or DEFAULT_BASE_URL
    return str(explicit).rstrip("/")


def daemon_endpoint() -> str:
    """Where the daemon sends: ``$SAGEOX_TELEMETRY_ENDPOINT`` or the reference's endpoint."""
    return os.environ.get("SAGEOX_TELEMETRY_ENDPOINT") or DEFAULT_DAEMON_ENDPOINT


def daemon_otlp_endpoint() -> str:
    """``$SAGEOX_TELEMETRY_OTLP_ENDPOINT``: an http(s) URL where the daemon also exports every event it receives as
    an OpenTelemetry log record (OTLP/HTTP JSON); "" when unset or not an http(s) URL."""
    value = os.environ.get("SAGEOX_TELEMETRY_OTLP_ENDPOINT", "").strip()
    return value if value.startswith(("http://", "https://")) else ""


def client_id_override() -> str:
    """``$SAGEOX_CLIENT_ID`` (empty when unset): replaces the stored anonymous client id."""
    return os.environ.get("SAGEOX_CLIENT_ID", "").strip()


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> "float | None":
    """Seconds in a Go duration (``90s``, ``1h30m``, ``1.5h``, ``300ms``); None when malformed or negative."""
    text = text.strip()
    if text in ("0", "+0"):
        return 0.0
    if text.startswith("-"):
        return None
    text = text.removeprefix("+")
    if not text:
        return None
    total, pos = 0.0, 0
    while pos < len(text):
        start = pos
        while pos < len(text) and (text[pos].isdigit() or text[pos] == "."):
            pos += 1
        number = text[start:pos]
        unit_start = pos
        while pos < len(text) and not (text[pos].isdigit() or text[pos] == "."):
            pos += 1
        unit = text[unit_start:pos]
        if not number or number == "." or number.count(".") > 1 or unit not in _GO_UNITS:
            return None
        total += float(number) * _GO_UNITS[unit]
    return total


def number(variable: str) -> "float | None":
    """``$variable`` as a number; None when unset or malformed."""
    try:
        return float(os.environ.get(variable) or "")
    except ValueError:
        return None


def tuning(variable: str, names: "Iterable[str]") -> "dict[str, float]":
    """``key=value`` pairs, comma-separated, from ``$variable`` (test knobs); unknown keys and bad numbers ignored."""
    known = set(names)
    values: dict[str, float] = {}
    for item in os.environ.get(variable, "").split(","):
        key, _, value = (part.strip() for part in item.partition("="))
        if key in known:
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return values


# -- where files are (read by :mod:`ox_telemetry.paths`) ------------------------------


def home() -> str:
    """``$HOME`` when it is an absolute path, else "" (unset, empty or relative: nobody's home)."""
    value = os.environ.get("HOME", "")
    return value if os.path.isabs(value) else ""


def xdg_enabled() -> bool:
    """``OX_XDG_ENABLE=1``: the user's directories follow the XDG base directory spec."""
    return os.environ.get("OX_XDG_ENABLE", "") == "1"


def xdg_base(variable: str) -> str:
    """An XDG base directory variable (``XDG_CONFIG_HOME``...), or "" when unset or relative (the spec ignores it)."""
    value = os.environ.get(variable, "")
    return value if os.path.isabs(value) else ""


def user_config_override() -> str:
    """``$OX_USER_CONFIG``: the user config file instead of the default (empty when unset)."""
    return os.environ.get("OX_USER_CONFIG", "")


def socket_override() -> str:
    """``$OX_TELEMETRY_SOCKET``: the daemon socket's path instead of the default (empty when unset)."""
    return os.environ.get("OX_TELEMETRY_SOCKET", "")


def runtime_dir() -> str:
    """``$XDG_RUNTIME_DIR`` (empty when unset)."""
    return os.environ.get("XDG_RUNTIME_DIR", "")


def tmp_dir() -> str:
    """``$TMPDIR`` (empty when unset)."""
    return os.environ.get("TMPDIR", "")


def user_name() -> str:
    """The login name the environment gives (``USER``, ``LOGNAME``, ``USERNAME``), for the scrubber; "" when none."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or os.environ.get("USERNAME") or ""


def windows_arch() -> str:
    """``%PROCESSOR_ARCHITECTURE%``, where ``os.uname`` does not exist."""
    return os.environ.get("PROCESSOR_ARCHITECTURE", "")


def environment() -> "Mapping[str, str]":
    """The whole environment, read-only: for CI detection (a table of vendors' variables) and for the
    environment a child process is given."""
    return os.environ
