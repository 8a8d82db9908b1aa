"""ox-telemetry: usage telemetry for command-line tools.

``from ox_telemetry import Client, Event`` is all a CLI needs. Names are
loaded on first use (PEP 562), so importing the package costs a CLI almost
nothing; see CONTRACT.md for the public API.
"""

from .wire import (
    EVENT_ATTRIBUTION_SHOWN,
    EVENT_AUTH_FAILURE,
    EVENT_AUTH_SUCCESS,
    EVENT_COMMAND_COMPLETE,
    EVENT_COMMAND_ERROR,
    EVENT_COMMAND_START,
    EVENT_COWORKER_LOAD,
    EVENT_DAEMON_START_FAILURE,
    EVENT_GUIDANCE_FETCH,
    EVENT_GUIDANCE_FETCH_ERROR,
    EVENT_PRIME_EXCESSIVE,
    EVENT_SESSION_END,
    EVENT_SESSION_START,
    Batch,
    Event,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .client import Client
    from .consent_notice import notice
    from .queue import FileQueue
    from .stats import Stats

__version__ = "0.1.0"

_LAZY = {"Client": "client", "FileQueue": "queue", "Stats": "stats", "notice": "consent_notice"}

__all__ = [
    "EVENT_ATTRIBUTION_SHOWN", "EVENT_AUTH_FAILURE", "EVENT_AUTH_SUCCESS", "EVENT_COMMAND_COMPLETE",
    "EVENT_COMMAND_ERROR", "EVENT_COMMAND_START", "EVENT_COWORKER_LOAD",
    "EVENT_DAEMON_START_FAILURE", "EVENT_GUIDANCE_FETCH", "EVENT_GUIDANCE_FETCH_ERROR",
    "EVENT_PRIME_EXCESSIVE", "EVENT_SESSION_END", "EVENT_SESSION_START",
    "Batch", "Client", "Event", "FileQueue", "Stats", "notice",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ox_telemetry' has no attribute {name!r}")
    # The builtin import machinery: ``importlib`` itself costs a CLI ~1 ms.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value
