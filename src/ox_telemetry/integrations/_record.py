"""What every integration records about one command run; framework-free."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..wire import EVENT_COMMAND_COMPLETE, EVENT_COMMAND_ERROR, EVENT_COMMAND_START, Event

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..client import Client

#: The exit status of a process stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def exit_code_of(exc: BaseException) -> int:
    """The exit status ``exc`` leads to: SystemExit's code, a framework's ``exit_code``, 130 for Ctrl-C, else 1."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1  # sys.exit("message") prints it and exits 1
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    code = getattr(exc, "exit_code", None)  # click/typer Exit, ClickException
    return code if isinstance(code, int) and not isinstance(code, bool) else 1


def root_cause(exc: BaseException) -> BaseException:
    """The exception a framework turned into ``exc``: Click raises ``SystemExit`` while handling the real one."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


class CommandRun:
    """One run of one command: ``start`` when it is known, ``finish`` once, whatever happened.

    Never raises into the host: the client swallows its own failures, and the
    bookkeeping here is plain arithmetic.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.started = time.monotonic()
        self.command = ""
        self.flags: list[str] = []
        self.start_sent = False
        self.finished = False

    def start(self, command: str, flags: Iterable[str] = ()) -> None:
        """Record ``command_start`` for ``command`` (a path such as ``agent prime``), once.

        The duration is counted from here: parsing and framework start-up are not the command's.
        """
        if not self.start_sent:
            self.started = time.monotonic()
        self._start(command, flags)

    def _start(self, command: str, flags: Iterable[str]) -> None:
        self.command = command
        self.flags = sorted(set(flags))
        if self.start_sent:
            return
        self.start_sent = True
        self.client.track(Event(EVENT_COMMAND_START, command=command, session_id=self.client.session_id,
                                metadata=self._metadata()))

    def finish(self, exit_code: int, error: BaseException | None = None) -> None:
        """Record ``command_complete`` (exit 0, no error) or ``command_error``, once."""
        if self.finished:
            return
        self.finished = True
        success = exit_code == 0 and (error is None or exit_code_of(error) == 0)
        if success and not self.start_sent:
            self._start(self.command, self.flags)  # a group run without a subcommand still started
        metadata = self._metadata()
        metadata["exit_code"] = str(exit_code)
        error_code = ""
        if not success:
            error_code = type(error).__name__ if error is not None else f"exit_{exit_code}"
        duration = time.monotonic() - self.started
        # The session stats as Client.track_command keeps them; that method itself would record
        # a second, differently shaped event.
        self.client.count_command(self.command, duration, success)
        self.client.track(Event(
            EVENT_COMMAND_COMPLETE if success else EVENT_COMMAND_ERROR, command=self.command,
            duration_ms=int(duration * 1000), success=success, error_code=error_code,
            session_id=self.client.session_id, metadata=metadata,
        ))

    def _metadata(self) -> dict[str, str]:
        return {"flags": ",".join(self.flags)} if self.flags else {}
