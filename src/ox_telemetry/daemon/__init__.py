"""The per-user delivery daemon (``ox-telemetry daemon start|stop|status|run``).

CLIs hand it events over a Unix socket (CONTRACT.md section 3); it spools them
to disk, then sends them in batches to the ``/tevents`` endpoint. It also
sends projects' file queues on a CLI's behalf (``flush_queue``).

Modules, one job each:

``settings``  timings and limits, with the environment overrides tests use;
``protocol``  one IPC line to a validated message, or a precise error;
``spool``     the bounded on-disk spool of received events;
``upload``    batches, gzip, retries, ``X-SageOx-Interval``;
``server``    the asyncio socket server and the daemon's counters;
``lifecycle`` pid file, socket directory checks, start/stop of the process;
``cli``       the ``ox-telemetry daemon`` subcommands.
"""

APP_TYPE = "ox-telemetry-daemon"
