"""The first-run consent notice: ``ox_telemetry.notice(app_name, docs_url)``.

The first time a user runs a host CLI (and again whenever
:data:`NOTICE_VERSION` changes) a short notice goes to stderr saying what is
collected and how to turn it off, and a file in the user config directory
records that it was shown. Events recorded in that same run stay on disk and
are sent by later runs: the notice tells :func:`ox_telemetry.consent.hold_sends`,
and every consent decision made afterwards in this process says ``held``
(a host that never calls this never imports it).

Never prompts, never blocks, never raises. A user who opted out sees nothing.
(The module is not called ``notice``: ``ox_telemetry.notice`` is the function.)
"""

import os
import sys

#: Raise when the notice's text changes in substance: every user sees it once more.
NOTICE_VERSION = 1
NOTICE_FILE = "telemetry_notice_shown"

_TEXT = """\
{app} collects anonymous usage telemetry: command names, durations, success or
failure and error types, never arguments, file contents or personal data.
Turn it off: `export DO_NOT_TRACK=1`, `ox-telemetry disable`, or
`telemetry_enabled: false` in {config}.
Nothing from this run is sent. Details: {docs}
"""


def notice_path() -> str:
    """Where the shown notice's version is recorded."""
    from . import paths

    return os.path.join(paths.user_config_dir(), NOTICE_FILE)


def _shown_version(path: str) -> int:
    from . import files

    try:
        return int(files.read(path, 32).strip() or 0)
    except (OSError, ValueError):
        return 0


def _record(path: str) -> None:
    from . import files

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        files.write_atomic(path, f"{NOTICE_VERSION}\n".encode(), sync=False)
    except OSError:
        pass  # a read-only home sees the notice again next time, which is the safe side


def notice(app_name: str, docs_url: str) -> bool:
    """Show the telemetry notice if this user has not seen this version of it; True when shown.

    Call it before making the client (whose consent decision then holds its
    sends). When it shows, this run's events wait on disk for a later run to send.
    """
    try:
        from . import consent, paths

        if not consent.decide().enabled:
            return False  # opted out: nothing to tell, nothing to record
        path = notice_path()
        if _shown_version(path) >= NOTICE_VERSION:
            return False
        consent.hold_sends()
        text = _TEXT.format(app=app_name or "This program", docs=docs_url, config=paths.user_config_file())
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except Exception:
            pass  # a closed stderr: recorded anyway, the run's events are still held
        _record(path)
        return True
    except Exception:
        return False
