"""The ``tidings`` command line: append to, read and follow any store from a shell.

Every command takes ``--store URL`` (or ``TIDINGS_STORE``; by default
``sqlite:///./tidings.db``) and prints JSON lines when its output is not a terminal
(or with ``--json``), a table when it is. ``tidings.cli.runner`` lists the exit codes;
``docs/cli.md`` shows each command at work.
"""

from __future__ import annotations

from typing import Annotated

import typer

import tidings

app = typer.Typer(
    name="tidings",
    help="Append to, read and follow a tidings event store (SQLite, PostgreSQL, a server).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain usage errors: one "Error: ..." line, no box
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        print(f"tidings {tidings.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Append to, read and follow a tidings event store (SQLite, PostgreSQL, a server)."""


def main() -> None:
    """Run the ``tidings`` command (the console script's entry point)."""
    app(prog_name="tidings")


# Each command module registers its commands on ``app`` when imported, by one line here
# (``serve``, from tidings.cli.serve, included), kept in alphabetical order:
import tidings.cli.backup_commands  # noqa: E402
import tidings.cli.satellite_commands  # noqa: E402
import tidings.cli.serve  # noqa: E402
import tidings.cli.store_commands  # noqa: E402
