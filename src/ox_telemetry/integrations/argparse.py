"""argparse: parse, dispatch and record in one call.

    from ox_telemetry import Client
    from ox_telemetry.integrations.argparse import run

    def main(argv=None) -> int:
        parser = build_parser()          # subparsers with set_defaults(func=...)
        return run(parser, Client(session_id, version="1.2.3"), argv)

:func:`run` records ``command_start`` once the arguments parsed, then
``command_complete`` or ``command_error``, like the Click integration. The
command path comes from the subparsers that matched (``agent prime``); flags
are the option names found in ``argv`` that the parsers define, never values.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._record import CommandRun, exit_code_of

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["run"]

# Each subparser gets this default, holding its command path; the deepest one matched wins.
_DEST = "_ox_telemetry_command"


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """``(name, subparser)`` of each subcommand of ``parser``, without aliases."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map to the same parser; the first name is the real one
                    seen.add(id(sub))
                    found.append((name, sub))
    return found


def _prepare(parser: argparse.ArgumentParser, prefix: str = "", options: dict[str, str] | None = None
             ) -> dict[str, str]:
    """Label every subparser with its command path; returns option string -> flag name for the whole tree."""
    options = {} if options is None else options
    for action in parser._actions:
        if action.option_strings:
            name = max(action.option_strings, key=len).lstrip("-")
            for option in action.option_strings:
                options[option] = name
    for name, sub in _subparsers(parser):
        path = f"{prefix} {name}".strip()
        sub.set_defaults(**{_DEST: path})
        _prepare(sub, path, options)
    return options


def _flags(argv: Sequence[str], options: dict[str, str]) -> list[str]:
    """Names of the options present in ``argv``: only exact option strings, so no value can slip in."""
    found = []
    for token in argv:
        if token == "--":
            break  # the rest is positional, whatever it looks like
        if token.startswith("-"):
            name = options.get(token.split("=", 1)[0] if token.startswith("--") else token)
            if name:
                found.append(name)
    return found


def _guess_path(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """The subcommands named in ``argv``, for a run whose arguments did not parse."""
    names = []
    choices = dict(_subparsers(parser))
    for token in argv:
        if token == "--":
            break
        if token in choices:
            names.append(token)
            choices = dict(_subparsers(choices[token]))
    return " ".join(names)


def _call_func(namespace: argparse.Namespace) -> int | None:
    func = getattr(namespace, "func", None)
    if func is None:
        return 0
    result: int | None = func(namespace)
    return result


def run(
    parser: argparse.ArgumentParser, client: Client, argv: Sequence[str] | None = None,
    dispatch: Callable[[argparse.Namespace], int | None] | None = None, *, manage_client: bool = True,
) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), call ``dispatch(namespace)``, record the run; returns the exit code.

    ``dispatch`` defaults to calling ``namespace.func(namespace)`` (the
    ``set_defaults(func=...)`` idiom); it returns an exit code or None for 0.
    Exceptions, ``SystemExit`` (argparse's own on a usage error or
    ``--help``) and ``KeyboardInterrupt`` are recorded and re-raised.
    ``manage_client``: start the client first and stop it after.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    options = _prepare(parser)
    record = CommandRun(client)
    record.command = _guess_path(parser, args) or parser.prog
    record.flags = sorted(set(_flags(args, options)))
    if manage_client:
        client.start()
    exit_code, error = 0, None
    try:
        namespace = parser.parse_args(args)
        command = getattr(namespace, _DEST, "") or parser.prog
        if hasattr(namespace, _DEST):
            delattr(namespace, _DEST)  # the host's code never sees our label
        record.start(command, record.flags)
        result = (dispatch or _call_func)(namespace)
        exit_code = result if isinstance(result, int) else 0
        return exit_code
    except BaseException as exc:
        exit_code, error = exit_code_of(exc), exc
        raise
    finally:
        record.finish(exit_code, error)
        if manage_client:
            client.stop()
