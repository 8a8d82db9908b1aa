"""uvicorn's server, stopped by Ctrl-C or SIGTERM without re-raising the signal.

uvicorn shuts down gracefully on the first Ctrl-C (a second one cuts the wait
short), then raises each signal it caught once more, inside its still running
event loop, so a process that embeds it dies by the signal; and after a second
Ctrl-C it skips the application's shutdown, whose task is then cancelled with a
traceback. The collector instead returns, its exit status (130 after Ctrl-C)
saying why, and a second Ctrl-C cuts short only the wait for open connections:
the application's shutdown, which commits what the writer holds, always runs.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    """A uvicorn server that records the signal that stopped it (``interrupted``) instead of raising it again."""

    interrupted = False

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's handlers while serving (main thread only), the previous ones after; nothing raised again."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, then the application's if a second Ctrl-C made uvicorn skip it."""
        await super().shutdown(sockets)
        done = getattr(self.lifespan, "shutdown_event", None)
        if self.force_exit and done is not None and not done.is_set():
            await self.lifespan.shutdown()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Shut down (a second Ctrl-C: now); remember a Ctrl-C for the exit status."""
        if sig == signal.SIGINT:
            self.interrupted = True
        super().handle_exit(sig, frame)
