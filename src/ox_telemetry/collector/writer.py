"""The server's side of the writer process: requests queue their rows, the process commits them together.

Concurrent requests are grouped into one transaction (see writer_process.py);
each request waits for its own answer, which comes only after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..background import isolated_command, isolated_env
from .errors import retry_after
from .storage import StorageError
from .writer_process import Encoded, frame, unframe

log = logging.getLogger("ox_telemetry.collector")


class Writer:
    """Owns all writes to the store at ``db_url``, through one child process started by :meth:`start`."""

    def __init__(self, db_url: str, max_pending: int = 200_000, max_group: int = 20_000) -> None:
        self.db_url = db_url
        self.max_pending = max_pending  # rows waiting before requests are turned away with 503
        self.max_group = max_group  # rows per transaction, so one commit never grows without bound
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, tuple[asyncio.Future[int], int]] = {}
        self._seq = 0
        self._queued_rows = 0
        self._closing = False
        self._lock = asyncio.Lock()
        self._rate = 20_000.0  # rows committed a second, a running estimate for Retry-After
        self._window = (time.monotonic(), 0)
        self._next_start = 0.0

    @property
    def queued_rows(self) -> int:
        """Rows sent to the writer and not yet answered."""
        return self._queued_rows

    def alive(self) -> bool:
        """Whether the writer process runs and accepts work."""
        return self._proc is not None and self._proc.returncode is None and not self._closing

    async def start(self) -> None:
        """Start the writer process; StorageError when it cannot open the store."""
        proc = await asyncio.create_subprocess_exec(
            # Isolated like the client's children: nothing in the cwd or PYTHON* variables is imported.
            *isolated_command("ox_telemetry.collector.writer_process:main", [], site=True),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd="/", env=isolated_env(),
        )
        assert proc.stdin is not None and proc.stdout is not None
        # The URL goes through the pipe, not the command line, where anyone could read its password.
        proc.stdin.write(frame((self.db_url, self.max_group)))
        try:
            await proc.stdin.drain()
            status, message = await _read_frame(proc.stdout)
        except (OSError, asyncio.IncompleteReadError) as exc:
            await _reap(proc)
            raise StorageError(f"the writer process did not start: {exc}") from None
        if status != "ready":
            await _reap(proc)
            raise StorageError(str(message))
        self._proc = proc
        self._reader = asyncio.create_task(self._read_answers(proc))

    async def _read_answers(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                seq, result = await _read_frame(proc.stdout)
                future, rows = self._waiting.pop(int(seq))  # type: ignore[call-overload]
                self._queued_rows -= rows
                self._count(rows)
                if future.done():
                    continue  # the request went away
                if isinstance(result, int):
                    future.set_result(result)
                else:
                    future.set_exception(StorageError(result))
        except (asyncio.IncompleteReadError, OSError):
            if not self._closing:
                log.error("the writer process exited (status %s); it is restarted on the next write",
                          await proc.wait())
        finally:
            # Whatever was not answered may or may not be stored: senders retry, duplicates are dropped.
            for future, _ in self._waiting.values():
                if not future.done():
                    future.set_exception(StorageError("the writer process exited"))
            self._waiting.clear()
            self._queued_rows = 0

    def _count(self, rows: int) -> None:
        started, done = self._window
        done += rows
        elapsed = time.monotonic() - started
        if elapsed >= 1.0:
            self._rate = max(1000.0, 0.5 * self._rate + 0.5 * done / elapsed)
            self._window = (time.monotonic(), 0)
        else:
            self._window = (started, done)

    async def _restart(self) -> None:
        # At most one attempt a second: a store that keeps failing must not cost a process per request.
        if time.monotonic() < self._next_start:
            raise StorageError("the writer process is restarting")
        self._next_start = time.monotonic() + 1.0
        await self.start()

    def admit(self, rows: int = 1) -> None:
        """RequestError 503 when ``rows`` more would overfill the queue, or while shutting down.

        Called before a request's body is read as well, so an overloaded
        collector sheds load before doing the work of parsing it.
        """
        if self._closing:
            raise retry_after(503, "shutting_down", "the collector is shutting down", 1)
        if self._queued_rows and self._queued_rows + rows > self.max_pending:
            raise retry_after(503, "overloaded", "the collector is overloaded; try again later",
                              self._queued_rows / self._rate)

    async def submit(self, job: Encoded) -> int:
        """Send ``job`` and wait until it is committed; returns how many of its rows were new.

        RequestError 503 when too much is queued or while shutting down;
        StorageError when the store failed.
        """
        self.admit(job.rows)
        if not self.alive():
            async with self._lock:
                if not self.alive():
                    await self._restart()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._seq += 1
        self._waiting[self._seq] = (future, job.rows)
        self._queued_rows += job.rows
        try:
            proc.stdin.write(frame((self._seq, job.data)))
            await proc.stdin.drain()  # waits while the pipe is full: back-pressure, not a blocked loop
        except OSError as exc:
            raise StorageError(f"the writer process is gone: {exc}") from None
        return await future

    async def close(self, timeout: float = 30.0) -> None:
        """Let the writer commit what it was sent, then stop it."""
        self._closing = True
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            log.error("the writer process did not finish in %s s; killing it", timeout)
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader


async def _read_frame(stream: asyncio.StreamReader) -> tuple[object, object]:
    header = await stream.readexactly(4)
    first, second = unframe(await stream.readexactly(int.from_bytes(header, "big")))
    return first, second


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
