"""``--retain-days N``: raw events received longer ago are deleted, in the background.

Whole stored batches go (SQLite keeps a request's rows as one array, stamped
with its receive time; PostgreSQL deletes rows), in one transaction a pass.
The rollups and the installations sketches stay: they hold counts, histograms
and HyperLogLog registers, never an event or an installation's id.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.concurrency import run_in_threadpool

from .storage import Storage, StorageError

log = logging.getLogger("ox_telemetry.collector")

class Retention:
    """Deletes what ``storage`` received more than ``days`` days ago, at start and every ``interval`` seconds."""

    def __init__(self, storage: Storage, days: float, interval: float) -> None:
        self.storage = storage
        self.days = days
        self.interval = interval

    def once(self, now: float | None = None) -> int:
        """One pass; how many events went. The ids of events older than the cut are forgotten too, so the
        duplicate check does not outgrow the events (such an event sent again is stored again)."""
        cut = int(((time.time() if now is None else now) - self.days * 86400) * 1_000_000)
        return self.storage.delete_batches("received_at < :cut", {"cut": cut}, keys_before=cut)

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass is logged and tried again at the next."""
        while True:
            try:
                deleted = await run_in_threadpool(self.once)
                if deleted:
                    log.info("retention: %d events older than %g days deleted", deleted, self.days)
            except StorageError as exc:
                log.warning("retention pass failed: %s", exc)
            except Exception:  # a bug in one pass must not end retention for the collector's life
                log.exception("retention pass failed")
            await asyncio.sleep(self.interval)
