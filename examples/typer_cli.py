"""A Typer CLI whose commands are recorded by ox-telemetry with one call.

Needs Typer: `pip install -e . typer` from a clone (the `dev` extra has it too).

    python examples/typer_cli.py greet Ada --shout
    python examples/typer_cli.py agent prime --force
    OX_TELEMETRY_DEBUG=1 python examples/typer_cli.py fail    # see the events, send nothing
    SAGEOX_ENDPOINT=http://127.0.0.1:8080 python examples/typer_cli.py exit 3
"""

from __future__ import annotations

import time
import uuid

import typer

import ox_telemetry
from ox_telemetry import Client
from ox_telemetry.integrations.click import instrument_typer

DOCS = "https://sageox.ai/docs/telemetry"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
agent = typer.Typer()
app.add_typer(agent, name="agent", help="Agent commands.")


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", help="say more")) -> None:
    """An example CLI."""


@app.command()
def greet(name: str, shout: bool = typer.Option(False, "--shout")) -> None:
    """Greet NAME."""
    text = f"Hello, {name}!"
    print(text.upper() if shout else text)


@agent.command()
def prime(force: bool = typer.Option(False, "--force")) -> None:
    """Prime the agent."""
    print("primed")


@app.command()
def fail() -> None:
    """Always raises."""
    raise RuntimeError("this command always fails")


@app.command(name="exit")
def exit_(code: int) -> None:
    """Exit with CODE."""
    raise typer.Exit(code)


@app.command()
def wait() -> None:
    """Wait a minute (interrupt it with Ctrl-C)."""
    print("waiting", flush=True)
    time.sleep(60)


def main() -> None:
    ox_telemetry.notice("typer-example", DOCS)
    instrument_typer(app, Client(str(uuid.uuid4()), version="0.1.0"))
    app(prog_name="typer-example")


if __name__ == "__main__":
    main()
