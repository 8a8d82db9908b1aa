"""A tiny CLI that records its commands with ox-telemetry.

Needs only the standard library and this project: `pip install -e .` from a clone.

    python examples/hello_cli.py greet Ada
    OX_TELEMETRY_DEBUG=1 python examples/hello_cli.py greet Ada   # see the events, send nothing
    SAGEOX_ENDPOINT=http://127.0.0.1:8080 python examples/hello_cli.py greet Ada
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from ox_telemetry import Client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hello")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("greet").add_argument("name")
    sub.add_parser("fail")
    args = parser.parse_args(argv)

    with Client(str(uuid.uuid4()), version="0.1.0") as telemetry:
        started = time.monotonic()
        try:
            if args.command == "fail":
                raise RuntimeError("this command always fails")
            print(f"Hello, {args.name}!")
        except Exception as exc:
            telemetry.track_command(args.command, time.monotonic() - started, False, exc)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        telemetry.track_command(args.command, time.monotonic() - started, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
