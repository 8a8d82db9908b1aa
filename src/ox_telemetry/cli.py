"""The ``ox-telemetry`` console script: a thin dispatcher.

Each subcommand lives in its own module and is imported only when asked for,
so ``ox-telemetry status`` never pays for the collector's web stack.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function" taking ``argv`` and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "upload": ("ox_telemetry.uploader:main", "send a queue file now (used by the background uploader)"),
    "daemon": ("ox_telemetry.daemon.cli:main", "the per-user delivery daemon: start, stop, status, run"),
    "serve": ("ox_telemetry.collector.cli:main", "run the collector: ingestion endpoints, storage and dashboard"),
    "demo": ("ox_telemetry.demo:main", "send realistic events to a collector so its dashboard has data"),
    "status": ("ox_telemetry.commands:status_main", "whether telemetry is on, which rule decided it, what waits"),
    "enable": ("ox_telemetry.commands:enable_main", "turn telemetry on in the user config"),
    "disable": ("ox_telemetry.commands:disable_main", "turn telemetry off and delete what is queued locally"),
    "mode": ("ox_telemetry.commands:mode_main", "on, local (kept on this machine, never sent) or off"),
    "forget": ("ox_telemetry.commands:forget_main", "delete this installation's events at the endpoint, then its id"),
    "show": ("ox_telemetry.commands:show_main", "print exactly what would be sent"),
    "view": ("ox_telemetry.commands:view_main", "the local record as a report; --html FILE writes it as a page"),
    "flush": ("ox_telemetry.commands:flush_main", "send now, in the foreground, and report each batch"),
}


def version() -> str:
    """This installation's version, from its package metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ox-telemetry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: ox-telemetry [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(f"ox-telemetry {version()}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"ox-telemetry: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, function = entry[0].partition(":")
    code: int = getattr(importlib.import_module(module_name), function)(args[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
