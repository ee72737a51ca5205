"""The store commands: ``append``, ``read``, ``tail``, ``streams``, ``subscriptions``.

Each opens the store named by ``--store URL`` (or ``TIDINGS_STORE``, by default
``sqlite:///./tidings.db``; ``memory://``, ``sqlite:///path``, ``postgresql://...`` or a
server's ``http(s)://`` URL), does its work in ``asyncio.run`` and closes the store.
Only ``append`` creates a SQLite file; the others report a missing one (exit 4).

Output is JSON lines when stdout is not a terminal or with ``--json``, a table
otherwise (``tidings.cli.output``). Errors are one line on stderr and an exit code:

    0 ok · 1 unexpected · 2 bad usage or input (nothing written) · 3 conflict:
    wrong expected version, duplicate event id (nothing written) · 4 not found ·
    5 store unavailable · 6 access denied · 130 interrupted (``tail -f``: 0)

(``tidings.cli.runner`` explains each.)
"""

from __future__ import annotations

import sys
from typing import Annotated, Any
from uuid import UUID

import msgspec
import typer

from tidings.cli import app
from tidings.cli.output import (
    EVENT_COLUMNS,
    RESULT_COLUMNS,
    STREAM_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    Printer,
    wants_json,
)
from tidings.cli.runner import DEFAULT_STORE, opened, run
from tidings.errors import InvalidInput
from tidings.events import ANY, NO_STREAM, STREAM_EXISTS, Expected, Filter, NewEvent

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="TIDINGS_STORE",
        metavar="URL",
        help="The store: sqlite:///file.db, postgresql://user@host/db, http://host:port, "
        "memory://.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON lines, even on a terminal.")]
LimitOption = Annotated[
    int | None, typer.Option("--limit", "-n", min=0, metavar="N", help="Print at most N.")
]

_MARKERS: dict[str, Expected] = {
    "any": ANY,
    "no_stream": NO_STREAM,
    "stream_exists": STREAM_EXISTS,
}


def parse_expected(text: str) -> Expected:
    """An expected version from its command-line form: an int >= 0, ``any``,
    ``no_stream`` or ``stream_exists`` (any case, ``-`` for ``_``)."""
    marker = _MARKERS.get(text.strip().lower().replace("-", "_"))
    if marker is not None:
        return marker
    try:
        version = int(text)
    except ValueError:
        version = -1
    if version < 0:
        raise InvalidInput(
            f"--expected-version must be an int >= 0, any, no_stream or stream_exists, not {text!r}"
        )
    return version


def parse_json(text: str | bytes, what: str) -> Any:
    """The value of a JSON text, or ``InvalidInput`` naming ``what`` was not JSON."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def new_event(
    event_type: str, data: str | None, metadata: str | None, event_id: UUID | None
) -> NewEvent:
    """The event ``append`` was given: DATA as JSON, ``-`` for JSON on stdin, or null."""
    if data == "-":
        value = parse_json(sys.stdin.buffer.read(), "DATA from stdin")
    else:
        value = None if data is None else parse_json(data, "DATA")
    meta = None if metadata is None else parse_json(metadata, "--metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidInput(f"--metadata must be a JSON object, not {metadata}")
    return NewEvent(event_type, value, meta, event_id)


@app.command()
def append(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="The stream, as order-42.")],
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="The event's type.")],
    data: Annotated[
        str | None,
        typer.Argument(
            metavar="DATA", help="The event's data as JSON; - reads it from stdin; none: null."
        ),
    ] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", "-m", metavar="JSON", help="A JSON object.")
    ] = None,
    event_id: Annotated[
        UUID | None,
        typer.Option("--id", metavar="UUID", help="The event's id: a retry appends it once."),
    ] = None,
    expected_version: Annotated[
        str,
        typer.Option(
            "--expected-version",
            "-e",
            metavar="V",
            help="Append only if the stream is at V: a version (0-based), any, no_stream, "
            "stream_exists.",
        ),
    ] = "any",
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Append one event to STREAM and print where it landed."""
    printer = Printer(RESULT_COLUMNS, as_json=wants_json(as_json))

    async def work() -> None:
        expected = parse_expected(expected_version)
        event = new_event(event_type, data, metadata, event_id)  # all checked before connecting
        async with opened(store, create=True) as s:
            printer.add(await s.append(stream, [event], expected_version=expected))
        printer.finish()

    run(work)


@app.command()
def read(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="The stream to read.")],
    from_version: Annotated[
        int | None,
        typer.Option(
            "--from-version",
            min=0,
            metavar="N",
            help="Start at version N (backwards: N and below).",
        ),
    ] = None,
    limit: LimitOption = None,
    backwards: Annotated[bool, typer.Option("--backwards", "-b", help="Newest first.")] = False,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Print the events of STREAM in version order (none for a stream with no events)."""
    printer = Printer(EVENT_COLUMNS, as_json=wants_json(as_json))

    async def work() -> None:
        async with opened(store) as s:
            async for event in s.read_stream(stream, from_version, limit, backwards):
                printer.add(event)
        printer.finish()

    run(work)


def log_filter(categories: list[str], types: list[str], stream_prefix: str | None) -> Filter:
    """The filter ``tail`` reads the log through (``InvalidInput`` for an empty name)."""
    for flag, names in (("--category", categories), ("--type", types)):
        if any(not name for name in names):
            raise InvalidInput(f"{flag} needs a non-empty name")
    return Filter(categories=categories or None, stream_prefix=stream_prefix, types=types or None)


@app.command()
def tail(
    categories: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            "-c",
            metavar="C",
            help="Only streams of category C (order of order-42); repeat for several.",
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", metavar="T", help="Only events of type T; repeat."),
    ] = None,
    stream_prefix: Annotated[
        str | None,
        typer.Option("--stream-prefix", "-p", metavar="P", help="Only streams named P..."),
    ] = None,
    from_position: Annotated[
        int,
        typer.Option(
            "--from-position",
            min=0,
            metavar="N",
            help="Start after position N (a checkpoint: the last position seen).",
        ),
    ] = 0,
    limit: LimitOption = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Go on printing events as they commit; Ctrl-C ends."),
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Print the global log, in position order, optionally filtered; -f follows it live."""
    printer = Printer(EVENT_COLUMNS, as_json=wants_json(as_json), live=follow)

    async def work() -> None:
        selected = log_filter(categories or [], types or [], stream_prefix)
        async with opened(store) as s:
            pages = s.read_all_pages(from_position, selected, limit, follow)
            async for page in pages:
                if follow:
                    printer.add_all(page)  # out at once, for whoever is watching
                else:
                    for event in page:
                        printer.add(event)
        printer.finish()

    run(work, interrupt_ok=follow)


@app.command()
def streams(
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", "-p", metavar="P", help="Only streams whose name starts with P."),
    ] = None,
    limit: LimitOption = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Print the streams in name order, each with its last version (0-based)."""
    printer = Printer(STREAM_COLUMNS, as_json=wants_json(as_json))

    async def work() -> None:
        async with opened(store) as s:
            async for info in s.list_streams(prefix=prefix, limit=limit):
                printer.add(info)
        printer.finish()

    run(work)


@app.command()
def subscriptions(
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
) -> None:
    """Print the durable subscriptions: checkpoint, head, lag, state, parked events."""
    printer = Printer(SUBSCRIPTION_COLUMNS, as_json=wants_json(as_json))

    async def work() -> None:
        async with opened(store) as s:
            for info in await s.subscriptions():
                printer.add(info)
        printer.finish()

    run(work)
