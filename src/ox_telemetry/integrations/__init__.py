"""Record a CLI's commands with one call: Click, Typer and argparse.

``ox_telemetry.integrations.click.instrument(group, client)`` (Click and, via
``instrument_typer``, Typer) and ``ox_telemetry.integrations.argparse.run``
record ``command_start`` when a command starts, then ``command_complete`` or
``command_error`` with the full command path (``agent prime``), the duration,
the exit code (metadata ``exit_code``), the exception's class name
(``error_code``) and the names of the flags given (metadata ``flags``), never
argument values.

Nothing here imports Click or Typer until their module is imported.
"""

__all__ = ["CommandRun", "exit_code_of"]

from ._record import CommandRun, exit_code_of
