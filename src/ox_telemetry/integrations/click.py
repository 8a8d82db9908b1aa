"""Click (and Typer, which is Click underneath): one call on the root group.

    import click
    from ox_telemetry import Client
    from ox_telemetry.integrations.click import instrument

    @click.group()
    def cli() -> None: ...

    instrument(cli, Client(session_id, version="1.2.3"))
    cli()

or as a decorator, ``@instrumented(client)`` above ``@click.group()``. For
Typer: ``instrument_typer(app, client)`` before ``app()``.

Nothing here imports Click: commands are recognised by what they do, not by
class, because Typer (from 0.22) carries its own copy of Click whose classes
are not Click's.

How: the root command's ``main`` is wrapped (it sees the exit status Click
ends with, in standalone mode or not), and every command's ``invoke`` (it
sees the context of the command that actually ran, and the exception it
raised before Click turned it into an exit status). Groups resolve their
subcommands through a wrapped ``get_command``, so lazily loaded commands are
covered too. The client is started before the command runs and stopped after
it, unless ``manage_client=False``.
"""

from __future__ import annotations

import contextvars
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._record import CommandRun, exit_code_of, root_cause

if TYPE_CHECKING:
    import typer

    from ..client import Client

__all__ = ["instrument", "instrument_typer", "instrumented"]

C = TypeVar("C")
_MARK = "_ox_telemetry_wrapped"
# The run in progress: a command may run inside another's (a test runner), hence a context variable.
_current: contextvars.ContextVar[_ClickRun | None] = contextvars.ContextVar("ox_telemetry_click_run", default=None)


class _ClickRun(CommandRun):
    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.ctx: Any = None  # the deepest click.Context that was invoked
        self.error: BaseException | None = None  # the innermost exception, as the command raised it


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict) and callable(getattr(command, "get_command", None))


def _path(ctx: Any, then: str | None = None) -> str:
    """``agent prime``: the names from the root's first subcommand down (and ``then``, a subcommand
    that did not get to run); the root's own name for a lone command."""
    names = [then] if then else []
    while ctx.parent is not None:
        names.append(ctx.info_name or ctx.command.name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) if names else ctx.command.name or ""


def _flags(ctx: Any) -> list[str]:
    """Names of the options given on the command line, in this context and its parents; never their values."""
    found = []
    while ctx is not None:
        for param in ctx.command.params:
            if getattr(param, "param_type_name", "") != "option" or not param.name:
                continue
            source = ctx.get_parameter_source(param.name)
            if getattr(source, "name", "") == "COMMANDLINE":
                found.append(max(param.opts, key=len).lstrip("-"))
        ctx = ctx.parent
    return found


def _wrap_tree(command: Any) -> None:
    """Wrap ``invoke`` of ``command`` and of every command under it (and those resolved later)."""
    if getattr(command, _MARK, False):
        return
    setattr(command, _MARK, True)
    original_invoke = command.invoke

    def invoke(ctx: Any) -> Any:
        run = _current.get()
        if run is not None:
            run.ctx = ctx  # a group is invoked before its subcommand: the last one is the deepest
            if not _is_group(command):
                run.start(_path(ctx), _flags(ctx))
        try:
            return original_invoke(ctx)
        except BaseException as exc:
            if run is not None and run.error is None:
                run.error = exc  # the command's own exception, before Click maps it to an exit status
            raise

    command.invoke = invoke
    if _is_group(command):
        for sub in list(command.commands.values()):
            _wrap_tree(sub)
        original_get = command.get_command

        def get_command(ctx: Any, name: str) -> Any:
            found = original_get(ctx, name)
            if found is not None:
                _wrap_tree(found)
            return found

        command.get_command = get_command


def _finish(run: _ClickRun, exit_code: int, outer: BaseException | None) -> None:
    ctx = run.ctx
    if ctx is not None:
        # A group that failed after choosing its subcommand (its own callback, or the
        # subcommand's arguments) is reported as that subcommand: what the user ran.
        then = ctx.invoked_subcommand if _is_group(ctx.command) and run.error else None
        run.command, run.flags = _path(ctx, then), sorted(set(_flags(ctx)))
    error = run.error
    if error is None and outer is not None and exit_code != 0:
        error = root_cause(outer)  # e.g. a usage error Click reported before any command ran
    run.finish(exit_code, error)


def instrument(command: C, client: Client, *, manage_client: bool = True) -> C:
    """Record every run of ``command`` (a Click group or command) and its subcommands; returns ``command``.

    ``manage_client``: start the client before the command and stop it after
    (so its events are queued and their sending begun); False when the host
    manages the client itself.
    """
    target: Any = command
    if getattr(target.main, _MARK, False):
        return command
    _wrap_tree(target)
    original_main = target.main

    def main(*args: Any, **kwargs: Any) -> Any:
        run = _ClickRun(client)
        token = _current.set(run)
        if manage_client:
            client.start()
        exit_code, outer = 0, None
        try:
            result = original_main(*args, **kwargs)
            if run.error is not None:  # standalone_mode=False returns an Exit's code instead of raising
                exit_code = exit_code_of(run.error)
            return result
        except BaseException as exc:
            exit_code, outer = exit_code_of(exc), exc
            raise
        finally:
            _current.reset(token)
            _finish(run, exit_code, outer)
            if manage_client:
                client.stop()

    setattr(main, _MARK, True)
    target.main = main
    return command


def instrumented(client: Client, *, manage_client: bool = True) -> Callable[[C], C]:
    """Decorator form of :func:`instrument`: put it above ``@click.group()``."""

    def decorate(command: C) -> C:
        return instrument(command, client, manage_client=manage_client)

    return decorate


# Typer builds a fresh Click command from the app on every call of typer.main.get_command
# (app() and typer.testing.CliRunner both go through it); that function is wrapped once,
# and instruments the commands built for registered apps. typer.testing binds the function
# by name when imported, so its copy is replaced too when it was imported first.
_typer_apps: weakref.WeakKeyDictionary[Any, tuple[Client, bool]] = weakref.WeakKeyDictionary()


def instrument_typer(app: typer.Typer, client: Client, *, manage_client: bool = True) -> typer.Typer:
    """Record every run of the Typer ``app``, as :func:`instrument` does for Click; returns ``app``."""
    import typer.main

    _typer_apps[app] = (client, manage_client)
    original = typer.main.get_command
    if not getattr(original, _MARK, False):

        def get_command(typer_instance: typer.Typer) -> Any:
            command = original(typer_instance)
            registered = _typer_apps.get(typer_instance)
            if registered is not None:
                instrument(command, registered[0], manage_client=registered[1])
            return command

        setattr(get_command, _MARK, True)
        typer.main.get_command = get_command
        testing: Any = sys.modules.get("typer.testing")
        if testing is not None and getattr(testing, "_get_command", None) is original:
            testing._get_command = get_command
    return app
