"""The anonymous installation id: one random UUIDv4 per user, shared by the CLI's sender and the daemon.

It lets the collector count installations, never who runs them: it is made
from nothing about the machine or the user, deleted by ``disable`` and
``forget``, and made anew on the next send after that. Imported only by the
processes that send, never at the client's import time (it needs ``uuid``).
"""

from __future__ import annotations

import logging
import os
import uuid

from . import files, paths
from .settings import client_id_override

log = logging.getLogger("ox_telemetry")


def stored_client_id() -> str | None:
    """``$SAGEOX_CLIENT_ID``, else the id in the client-id file; None when neither holds one.

    The file is read like every file in the state dir: never through a link,
    never blocking on a FIFO, at most 128 bytes.
    """
    explicit = client_id_override()
    if explicit:
        return explicit
    try:
        return str(uuid.UUID(files.read(paths.client_id_path(), 128).decode("ascii").strip()))
    except (OSError, ValueError):  # also UnicodeDecodeError, and a FIFO or link refused
        return None


def client_id() -> str:
    """The stored id (:func:`stored_client_id`), else a new UUIDv4 saved in the client-id file (mode 0600)."""
    found = stored_client_id()
    if found is not None:
        return found
    value = str(uuid.uuid4())
    try:
        path = paths.client_id_path()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        files.write_atomic(path, (value + "\n").encode("ascii"))
    except OSError as exc:  # still usable for this run
        log.warning("could not save the client id: %s", exc)
    return value
