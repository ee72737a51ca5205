"""``tidings satellite status FILE``: where a satellite stands, read from its file.

Prints the satellite's id, the server position it has replicated up to, when it last
synced, its pending transactions (and how many of them the server accepted but the
satellite has not pulled back yet) and its conflicts; with ``--server`` it also says
whether that server answers now. Exit 4 when the file is not a satellite's.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tidings.cli import app
from tidings.cli.output import Column, Printer, utc_text, wants_json
from tidings.cli.runner import run
from tidings.cli.store_commands import JsonOption
from tidings.satellite import SatelliteStatus, file_status

satellite_app = typer.Typer(
    name="satellite", help="Inspect a satellite's local file.", no_args_is_help=True
)
app.add_typer(satellite_app)

STATUS_COLUMNS: list[Column[SatelliteStatus]] = [
    Column("satellite", lambda s: s.satellite_id, "bold"),
    Column("online", lambda s: "yes" if s.online else "no", "green"),
    Column("position", lambda s: str(s.position), "cyan", "right"),
    Column("last sync", lambda s: "-" if s.last_sync is None else utc_text(s.last_sync)),
    Column("pending", lambda s: str(s.pending), "yellow", "right"),
    Column("accepted", lambda s: str(s.accepted), "", "right"),
    Column("conflicts", lambda s: str(s.conflicts), "red", "right"),
    Column("error", lambda s: s.last_error or "", "dim", optional=True, wrap=True),
]


@satellite_app.command()
def status(
    file: Annotated[str, typer.Argument(help="the satellite's file (path or sqlite:/// URL)")],
    server: Annotated[
        str | None, typer.Option(help="also check that this server answers (http://...)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="TIDINGS_TOKEN", help="a key or JWT for --server")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Show where a satellite stands: replicated position, last sync, pending, conflicts."""
    url = file if file.startswith("sqlite:///") else f"sqlite:///{file}"

    async def work() -> None:
        found = await file_status(url, server, token)
        printer = Printer(STATUS_COLUMNS, as_json=wants_json(json))
        printer.add(found)
        printer.finish()

    run(work)
