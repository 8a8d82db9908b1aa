"""An argparse CLI whose commands are recorded by ox-telemetry with one call.

Needs only the standard library and this project: `pip install -e .` from a clone.

    python examples/argparse_cli.py greet Ada --shout
    python examples/argparse_cli.py agent prime --force
    OX_TELEMETRY_DEBUG=1 python examples/argparse_cli.py fail    # see the events, send nothing
    SAGEOX_ENDPOINT=http://127.0.0.1:8080 python examples/argparse_cli.py exit 3
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import ox_telemetry
from ox_telemetry import Client
from ox_telemetry.integrations.argparse import run

DOCS = "https://sageox.ai/docs/telemetry"


def greet(args: argparse.Namespace) -> int:
    text = f"Hello, {args.name}!"
    print(text.upper() if args.shout else text)
    return 0


def prime(args: argparse.Namespace) -> int:
    print("primed")
    return 0


def fail(args: argparse.Namespace) -> int:
    raise RuntimeError("this command always fails")


def exit_(args: argparse.Namespace) -> int:
    code: int = args.code
    return code


def wait(args: argparse.Namespace) -> int:
    print("waiting", flush=True)
    time.sleep(60)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argparse-example", description="An example CLI.")
    parser.add_argument("--verbose", action="store_true", help="say more")
    sub = parser.add_subparsers(required=True)
    greet_parser = sub.add_parser("greet", help="greet NAME")
    greet_parser.add_argument("name")
    greet_parser.add_argument("--shout", action="store_true")
    greet_parser.set_defaults(func=greet)
    agent = sub.add_parser("agent", help="agent commands").add_subparsers(required=True)
    prime_parser = agent.add_parser("prime", help="prime the agent")
    prime_parser.add_argument("--force", action="store_true")
    prime_parser.set_defaults(func=prime)
    sub.add_parser("fail", help="always raises").set_defaults(func=fail)
    exit_parser = sub.add_parser("exit", help="exit with CODE")
    exit_parser.add_argument("code", type=int)
    exit_parser.set_defaults(func=exit_)
    sub.add_parser("wait", help="wait a minute").set_defaults(func=wait)
    return parser


def main(argv: list[str] | None = None) -> int:
    ox_telemetry.notice("argparse-example", DOCS)
    return run(build_parser(), Client(str(uuid.uuid4()), version="0.1.0"), argv)


if __name__ == "__main__":
    sys.exit(main())
