"""The one scrubber every free-text value passes through before it leaves the machine.

``scrub(text)`` replaces what could identify a person or unlock something:

- the user's home directory becomes ``~`` and the user's login name ``<user>``;
- other absolute paths keep only their last part: ``<path>/basename``;
- e-mail addresses, IPv4, IPv6 and MAC addresses, the credentials, query string and
  fragment of URLs;
- secrets: provider tokens (GitHub, GitLab, Slack, AWS, Google, Stripe, npm,
  PyPI, OpenAI/Anthropic), JWTs, ``Authorization``/``Bearer``/``Basic``
  values, ``password=…``-style pairs, PEM private key blocks, and long hex
  (32+) or base64 (40+) strings

each becoming ``<redacted:KIND>``. Ordinary command names, versions, error
codes and UUIDs pass unchanged (the test corpus holds both sides).

It runs at send time, in the uploader process or daemon, never on a CLI's
hot path: the client may not import :mod:`re`, this module may. All static
rules are one compiled alternation scanned once per string; the home and
user rules depend on the environment and are compiled once per value.
"""

import os
import re

from . import settings
from ._jsonlite import MAX_DEPTH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Event fields holding free text. Ids, timestamps, versions and enums are left alone.
TEXT_FIELDS = ("command", "error_code", "path", "api_endpoint", "coworker_name")

# Provider tokens: (kind, pattern). Checked before the generic hex/base64 rules
# so the report names the provider.
_TOKENS = (
    # A block cut off by the length limit has no END line: redact to the end of the text.
    ("private_key", r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)"
                    r"(?:-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
    ("slack_token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    ("aws_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("stripe_key", r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("pypi_token", r"\bpypi-[A-Za-z0-9_-]{50,}"),
    ("api_key", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
)

_PATTERN = "|".join(
    [f"(?P<{kind}>{pattern})" for kind, pattern in _TOKENS]
    + [
        # "Authorization: Bearer x", "Proxy-Authorization=Basic x": the scheme is kept, the value is not.
        r"(?P<auth_header>(?i:\b(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?i:bearer|basic|token|digest|negotiate)\s+)?)[^\s\"',;]+",
        r"(?P<auth_scheme>\b(?i:bearer|basic)\s+)(?P<auth_value>[A-Za-z0-9._~+/=-]{8,})",
        # password=..., "api_key": "...": the key is kept, the value is not.
        r"(?P<secret_key>\b(?i:pass(?:word|wd)?|pwd|secret|secret[_-]?key|client[_-]?secret|token|"
        r"access[_-]?token|refresh[_-]?token|api[_-]?key|access[_-]?key|private[_-]?key)"
        r"[\"']?\s*[:=]\s*[\"']?)(?P<secret_value>[^\s\"'&,;]+)",
        r"(?P<url>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+)",
        r"(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)",
        # An absolute path: Unix, Windows drive or home-relative. Not the path of a URL or
        # of "a/b" (the look-behind), and at least two parts unless it starts with "~".
        r"(?P<fspath>(?<![\w.:/\\~<>-])(?:~|[A-Za-z]:)?(?:[/\\][^\s/\\\"'<>|:*?`]+)+[/\\]?)",
        r"(?P<ipv4>(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
        r"(?![\w]|\.\d))",
        r"(?P<mac>(?<![\w:-])[0-9A-Fa-f]{2}(?P<sep_mac>[:-])(?:[0-9A-Fa-f]{2}(?P=sep_mac)){4}[0-9A-Fa-f]{2}(?![\w:-]))",
        r"(?P<ipv6>(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)?(?:%[\w.]+)?(?![\w:]))",
        r"(?P<hex>(?<![\w+/=-])(?:0x)?[0-9A-Fa-f]{32,}(?![\w+/=-]))",
        r"(?P<base64>(?<![\w+/=-])[A-Za-z0-9+/_-]{40,}={0,2}(?![\w+/=-]))",
    ]
)
_RULES = re.compile(_PATTERN)
# Something every static rule needs somewhere in the text: a separator of paths, URLs, e-mails,
# key=value pairs, IPv6/MAC addresses or base64; a dotted number; a long token-like run; a PEM
# dash line, a JWT header, an auth scheme. One cheap scan lets ordinary short values
# ("agent prime", "ValueError") skip the full rule set, which costs ~1.5 µs a character.
_GATE = re.compile(r"[:=/\\@+~]|\d\.\d|[A-Za-z0-9_-]{15,}|-----|eyJ|(?i:bearer|basic)")

# Home directories of any user, not only the current one.
_OTHER_HOME = re.compile(r"^(?:/home|/Users|/export/home|[A-Za-z]:[/\\](?:Users|Documents and Settings))[/\\][^/\\]+")
_GENERIC_ACCOUNTS = frozenset({
    "root", "user", "users", "admin", "administrator", "runner", "ubuntu", "debian", "ec2-user",
    "vagrant", "docker", "node", "app", "build", "builder", "ci", "jenkins", "gitlab-runner",
    "circleci", "buildkite-agent", "travis", "vscode", "codespace", "codespaces", "guest", "test",
    "nobody", "home", "default", "local", "system",
})
_TRAILING = ".,;:!?)]}'\""


def _redacted(kind: str) -> str:
    return f"<redacted:{kind}>"


def _strip_trailing(text: str) -> "tuple[str, str]":
    """Split sentence punctuation off the end of a match: ``("/a/b", ".")``."""
    body = text.rstrip(_TRAILING)
    return body, text[len(body):]


def _is_ipv6(text: str) -> bool:
    import ipaddress  # only when something looks like one

    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _looks_random(text: str) -> bool:
    # Random base64 of 40+ characters all but surely mixes upper case, lower case
    # and digits; long identifiers ("generate-kubernetes-manifests-…") do not.
    return (
        any(c.isdigit() for c in text) and any(c.isupper() for c in text) and any(c.islower() for c in text)
    )


def _fspath(text: str) -> str:
    body, tail = _strip_trailing(text)
    home = _OTHER_HOME.match(body)
    if home:
        body = "~" + body[home.end():]
    parts = [p for p in re.split(r"[/\\]", body) if p]
    if body.startswith("~"):
        parts = parts[1:]  # "~" itself
        if len(parts) <= 1:
            return body.replace("\\", "/") + tail
        return f"~/<path>/{parts[-1]}{tail}"
    if len(parts) < 2 or (len(parts) == 2 and parts[0].endswith(":")):
        return text  # "/tmp", "C:\x": too little to identify anyone, and often not a path
    return f"<path>/{parts[-1]}{tail}"


def _url(text: str) -> str:
    body, tail = _strip_trailing(text)
    scheme, _, rest = body.partition("://")
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    location, after = rest[:cut], rest[cut:]
    authority, slash, path = location.partition("/")
    _userinfo, at, host = authority.rpartition("@")
    out = scheme + "://"
    if at:
        out += _redacted("credentials") + "@"
    out += _RULES.sub(_replace, host)  # an IP address as host
    if slash:
        if scheme.lower() == "file":
            out += _fspath("/" + path)
        else:
            # Secrets in a path segment ("/token/ghp_…"); each segment alone so the path rule stays out.
            out += "/" + "/".join(_RULES.sub(_replace, segment) for segment in path.split("/"))
    if len(after) > 1:  # a bare "?" or "#" hides nothing (and keeps scrub idempotent)
        out += "?" + _redacted("query") if after.startswith("?") else "#" + _redacted("fragment")
    else:
        out += after
    return out + tail


def _replace(match: "re.Match[str]") -> str:
    kind = match.lastgroup or ""
    text = match.group(0)
    if kind == "auth_header":
        return match.group("auth_header") + _redacted("auth")
    if kind == "auth_value":  # lastgroup is the inner group
        value = match.group("auth_value")
        if value.isalpha() and (value.islower() or value[1:].islower()):
            return text  # "basic authentication": a word, not a credential
        return match.group("auth_scheme") + _redacted("auth")
    if kind == "secret_value":
        return match.group("secret_key") + _redacted("secret")
    if kind == "url":
        return _url(text)
    if kind == "fspath":
        return _fspath(text)
    if kind == "ipv4" and (text.startswith("127.") or text == "0.0.0.0"):
        return text  # loopback and "any" identify no one
    if kind == "ipv6" and (text in ("::1", "::") or not _is_ipv6(text)):
        return text
    if kind == "base64" and not _looks_random(text):
        return text
    return _redacted(kind)


_identity_cache: "dict[tuple[str, str], tuple[re.Pattern[str] | None, re.Pattern[str] | None]]" = {}


def _identity() -> "tuple[re.Pattern[str] | None, re.Pattern[str] | None]":
    """Patterns for this user's home directory and login name, compiled once per value."""
    home = settings.home() or os.path.expanduser("~")
    user = settings.user_name()
    key = (home, user)
    cached = _identity_cache.get(key)
    if cached is None:
        home = home.rstrip("/\\")
        home_re = None
        if len(home) > 1:  # not "/" or ""
            home_re = re.compile(re.escape(home) + r"(?![^/\\\s\"'<>,;:)\]])")
        user_re = None
        # A generic account name identifies nobody, and a short one would hit ordinary words.
        if len(user) >= 3 and user.lower() not in _GENERIC_ACCOUNTS:
            # Not inside a placeholder: a user called "path" or "email" leaves "<path>" alone.
            user_re = re.compile(r"(?<![A-Za-z0-9<])" + re.escape(user) + r"(?![A-Za-z0-9>])", re.IGNORECASE)
        cached = _identity_cache[key] = (home_re, user_re)
    return cached


def scrub(text: str) -> str:
    """``text`` with personal data and secrets replaced (see the module docstring); never raises."""
    if not text or not isinstance(text, str):
        return text if isinstance(text, str) else ""
    try:
        home_re, user_re = _identity()
        if home_re is not None:
            text = home_re.sub("~", text)
        if _GATE.search(text):
            text = _RULES.sub(_replace, text)
        if user_re is not None:
            text = user_re.sub("<user>", text)
        return text
    except Exception:  # a scrubber bug must not leak the text: drop it whole
        return _redacted("unscrubbable")


def scrub_event(event: "dict[str, Any]") -> "dict[str, Any]":
    """A copy of one event's wire form with every free-text field and metadata value scrubbed."""
    out = dict(event)
    for name in TEXT_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and value:
            out[name] = scrub(value)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        out["metadata"] = {k: scrub(v) if isinstance(v, str) else v for k, v in metadata.items()}
    return out


def scrub_value(value: "Any", room: int = MAX_DEPTH) -> "Any":
    """``value`` with every string in it, nested ones too, scrubbed: daemon event props.

    ValueError when lists and dicts nest deeper than ``room``: such a value is
    dropped by the caller, never half scrubbed, and never recursed into without bound.
    """
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (dict, list)) and room <= 0:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {k: scrub_value(v, room - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, room - 1) for v in value]
    return value


def scrub_line(line: str) -> str:
    """One JSON event line, scrubbed; the very same text when nothing needed replacing."""
    import json

    try:
        event = json.loads(line)
    except ValueError:
        return line
    return scrub_parsed_line(line, event)


def scrub_parsed_line(line: str, event: object) -> str:
    """``line``, already parsed as ``event``, scrubbed: for a caller that parsed it anyway."""
    if not isinstance(event, dict):
        return line
    clean = scrub_event(event)
    if clean == event:
        return line
    import json

    return json.dumps(clean, separators=(",", ":"))
