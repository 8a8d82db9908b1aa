"""The daemon's hand-off pool: CLIs' queues sent on their behalf (the ``flush_queue`` request).

A CLI that finds a daemon running hands it its queue instead of starting an
uploader process. Each queue is sent by one thread running a
:class:`~ox_telemetry.delivery.Delivery` (so the queue's send lock, backoff and
the user's request budget hold as for any sender); a queue asked for again
while it is being sent is run once more afterwards.

The path comes over the socket, so it is trusted no more than the client
trusts it: only a project queue (``<root>/.sageox/cache/telemetry.jsonl``
whose directories, from the project root down, are real and ours) or a
per-user spool is sent; anything else is refused and counted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from .. import files, paths
from ..delivery import Delivery
from ..queue import FileQueue, JsonlQueue
from ..transport import Transport

log = logging.getLogger("ox_telemetry.daemon")


def queue_at(path: str) -> JsonlQueue:
    """The queue a ``flush_queue`` request names; :class:`~ox_telemetry.files.UnsafeFile` when it is none we send.

    The request's shape (an absolute, normalised path of either form) was
    checked with the message (:func:`~ox_telemetry.daemon.protocol.parse_request`);
    this checks what is on disk, as the client does before it hands a queue over.
    """
    if paths.is_user_spool_path(path):
        queue = JsonlQueue(path)
    else:
        root = _project_root(path)
        if root is None:
            raise files.UnsafeFile(f"{path}: neither a project queue nor a per-user spool")
        queue = FileQueue(root)
    queue.check()  # its directories from the project root (or the cache dir) down, and its files
    return queue


def _project_root(path: str) -> str | None:
    # The root whose project queue path is exactly ``path``, if any.
    cache = os.path.dirname(path)
    root = os.path.dirname(os.path.dirname(cache))
    return root if root != path and paths.project_queue_path(root) == path else None


class HandOffPool:
    """Threads that send other processes' queues, one per queue at a time."""

    def __init__(self, transport: Callable[[], Transport]) -> None:
        self._transport = transport
        self._workers: set[str] = set()  # queues a run is sending
        self._again: set[str] = set()  # queues asked for again while being sent
        self._lock = threading.Lock()
        self._stop = threading.Event()  # ends the deliveries' waits
        self.refused = 0  # requests naming a path that is no queue of the user's

    def take(self, path: str, url: str, cli_version: str) -> None:
        """Send the queue at ``path`` in a thread; raises UnsafeFile (counted) when it is not one we send."""
        try:
            queue = queue_at(path)
        except OSError:
            self.refused += 1
            raise
        with self._lock:
            if path in self._workers:  # a worker removes itself, under this lock, as it ends
                # That queue is being sent. Its run may be past its last claim, so it is told to run
                # once more: events appended since are then not left waiting for the next CLI.
                self._again.add(path)
                return
            self._workers.add(path)
        delivery = Delivery(queue, self._transport(), url, cli_version, wait=self._stop.wait)
        try:
            threading.Thread(target=self._run, args=(path, delivery), name="ox-telemetry-queue", daemon=True).start()
        except BaseException:
            with self._lock:
                self._workers.discard(path)
            raise

    def _run(self, path: str, delivery: Delivery) -> None:
        while True:
            try:
                outcome = delivery.run()
                log.debug("queue %s: %s", path, outcome)
            except Exception as exc:  # a bad queue must not end the daemon
                log.warning("sending queue %s failed: %r", path, exc)
                outcome = "failed"
            with self._lock:
                again = path in self._again and outcome == "delivered"
                self._again.discard(path)
                if not again:
                    self._workers.discard(path)
                    return

    def in_flight(self) -> int:
        """Queues being sent now."""
        return len(self._workers)

    def stop(self) -> None:
        """End the runs' waits between retries (what is unsent stays in each queue)."""
        self._stop.set()
