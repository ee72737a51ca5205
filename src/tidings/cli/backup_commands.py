"""``tidings backup URL FILE`` and ``tidings restore FILE URL``: a store to a file and back.

Both show a progress bar (events and bytes) on stderr when it is a terminal, and print
what they did as a table, or as one JSON line when stdout is not a terminal or with
``--json``. A refused backup or restore (``BackupError``: a file that exists, an
incomplete, damaged or newer backup file, a non-empty target without ``--force``) exits
with 7, nothing written (``tidings.cli.runner`` lists the codes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import tidings.backup as backups
from tidings.cli import app
from tidings.cli.output import Column, Printer, wants_json
from tidings.cli.runner import opened, run
from tidings.cli.store_commands import JsonOption

BACKUP_COLUMNS: list[Column[backups.BackupInfo]] = [
    Column("file", lambda b: b.path, "bold"),
    Column("position", lambda b: str(b.position), "cyan", "right"),
    Column("events", lambda b: str(b.events), "", "right"),
    Column("bytes", lambda b: filesize.decimal(b.bytes), "", "right"),
    Column("source identity", lambda b: b.identity, "dim"),
    Column("seconds", lambda b: f"{b.seconds:.2f}", "", "right"),
]

RESTORE_COLUMNS: list[Column[backups.RestoreInfo]] = [
    Column("store", lambda r: r.url, "bold", fold=True, min_width=10),
    Column("position", lambda r: str(r.position), "cyan", "right"),
    Column("events", lambda r: str(r.events), "", "right"),
    Column("identity", lambda r: r.identity, "green"),
    Column("was", lambda r: r.source_identity, "dim"),
    Column("seconds", lambda r: f"{r.seconds:.2f}", "", "right"),
]

Report = Callable[[backups.Progress], None]


@contextlib.contextmanager
def progress_bar(action: str) -> Iterator[Report | None]:
    """A rich progress bar in events and bytes on stderr (None when it is no terminal)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[events]}"),
        TextColumn("{task.fields[bytes]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(action, total=None, events="", bytes="")

        def report(p: backups.Progress) -> None:
            size = filesize.decimal(p.bytes)
            if p.total_bytes is not None:
                size += " of " + filesize.decimal(p.total_bytes)
            bar.update(
                task,
                completed=p.events,
                total=max(p.total_events, 1),
                events=f"{p.events:,}/{p.total_events:,} events",
                bytes=size,
                description=f"{action} {p.table}",
            )

        yield report


@app.command()
def backup(
    url: Annotated[str, typer.Argument(metavar="URL", help="The store to back up.")],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The backup file to write.")],
    as_json: JsonOption = False,
) -> None:
    """Write a consistent copy of the store at URL to FILE while it keeps serving: the
    log up to its head now, and everything a restore needs."""
    printer = Printer(BACKUP_COLUMNS, as_json=wants_json(as_json))

    async def work() -> None:
        async with opened(url) as store:
            with progress_bar("backup") as report:
                info = await backups.backup(store, file, report)
        printer.add(info)
        printer.finish()

    run(work)


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A backup file.")],
    url: Annotated[str, typer.Argument(metavar="URL", help="The store to restore into.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace what the store holds (else: refused).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore FILE into the empty store at URL (SQLite or PostgreSQL): every event at its
    position, version and time, with a new store identity."""
    printer = Printer(RESTORE_COLUMNS, as_json=wants_json(as_json))

    async def work() -> None:
        with progress_bar("restore") as report:
            info = await backups.restore(file, url, force=force, progress=report)
        printer.add(info)
        printer.finish()

    run(work)
