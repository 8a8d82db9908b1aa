"""``python -m ox_telemetry.uploader``: the detached process that sends one queue file.

A CLI starts it (see :mod:`ox_telemetry.background`) and exits without
waiting; it outlives the CLI, sends, and leaves what it could not send on
disk for the next run. It writes nothing to the terminal.
"""

from __future__ import annotations

import argparse
import sys

from .delivery import Delivery
from .queue import JsonlQueue
from .transport import UrllibTransport


def main(argv: list[str]) -> int:
    """Deliver ``--queue`` to ``--url``; exit status 0 unless the arguments are wrong."""
    parser = argparse.ArgumentParser(prog="ox-telemetry upload", description=__doc__)
    parser.add_argument("--queue", required=True, help="path of the queue file (.jsonl)")
    parser.add_argument("--url", required=True, help="full URL to POST batches to")
    parser.add_argument("--cli-version", default="", help="sent as the batch's cli_version")
    parser.add_argument("--lock-fd", type=int, help="the queue's send lock, inherited already held")
    args = parser.parse_args(argv)
    queue = JsonlQueue(args.queue)
    sender = queue.sender(inherited_fd=args.lock_fd) if args.lock_fd is not None else None
    outcome = Delivery(queue, UrllibTransport(), args.url, args.cli_version).run(sender)
    print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
