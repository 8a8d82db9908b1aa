"""Debug logging that costs nothing until the host program uses ``logging``.

Importing :mod:`logging` costs a CLI several milliseconds, so the client only
logs through it when the host has already imported it (which is when anyone
could be listening). Processes of our own (uploader, daemon) import it.
"""

import sys

LOGGER_NAME = "ox_telemetry"


def debug(msg: str, *args: object) -> None:
    """Log ``msg % args`` at debug level on the ``ox_telemetry`` logger."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    try:
        logging.getLogger(LOGGER_NAME).debug(msg, *args)
    except Exception:  # a broken handler of the host's must not reach the host
        pass
