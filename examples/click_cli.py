"""A Click CLI whose commands are recorded by ox-telemetry with one call.

Needs Click: `pip install -e . click` from a clone (the `dev` extra has it too).

    python examples/click_cli.py greet Ada --shout
    python examples/click_cli.py agent prime --force
    OX_TELEMETRY_DEBUG=1 python examples/click_cli.py fail    # see the events, send nothing
    SAGEOX_ENDPOINT=http://127.0.0.1:8080 python examples/click_cli.py exit 3
"""

from __future__ import annotations

import sys
import time
import uuid

import click

import ox_telemetry
from ox_telemetry import Client
from ox_telemetry.integrations.click import instrument

DOCS = "https://sageox.ai/docs/telemetry"


@click.group()
@click.option("--verbose", is_flag=True, help="say more")
def cli(verbose: bool) -> None:
    """An example CLI."""


@cli.command()
@click.argument("name")
@click.option("--shout", is_flag=True)
def greet(name: str, shout: bool) -> None:
    """Greet NAME."""
    text = f"Hello, {name}!"
    click.echo(text.upper() if shout else text)


@cli.group()
def agent() -> None:
    """Agent commands."""


@agent.command()
@click.option("--force", is_flag=True)
def prime(force: bool) -> None:
    """Prime the agent."""
    click.echo("primed")


@cli.command()
def fail() -> None:
    """Always raises."""
    raise RuntimeError("this command always fails")


@cli.command(name="exit")
@click.argument("code", type=int)
@click.pass_context
def exit_(ctx: click.Context, code: int) -> None:
    """Exit with CODE."""
    ctx.exit(code)


@cli.command()
def wait() -> None:
    """Wait a minute (interrupt it with Ctrl-C)."""
    click.echo("waiting")
    time.sleep(60)


def main(argv: list[str] | None = None) -> None:
    ox_telemetry.notice("click-example", DOCS)
    instrument(cli, Client(str(uuid.uuid4()), version="0.1.0"))
    cli.main(argv, prog_name="click-example")


if __name__ == "__main__":
    main(sys.argv[1:])
