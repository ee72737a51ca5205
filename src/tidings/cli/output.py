"""What commands print: JSON lines for programs, rich tables for people.

When stdout is not a terminal, or with ``--json``, each record (an event, a stream, a
subscription, an append's result) is one line of JSON, msgspec's encoding of the
record's Struct, so that ``tidings read order-1 | jq .data`` works. On a terminal the
records make one rich table, printed once the command has read them all; a command
that never ends (``tail -f``) prints one line per record instead, as it arrives.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tidings.events import AppendResult, RecordedEvent, StreamInfo
from tidings.subscriptions import SubscriptionInfo

R = TypeVar("R", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def json_text(value: object) -> str:
    """``value`` as compact JSON text."""
    return _encoder.encode(value).decode()


def utc_text(moment: datetime) -> str:
    """A UTC time to the millisecond, as ``2025-05-01 12:00:00.123`` (a narrow table
    wraps it at the space)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def wants_json(flag: bool) -> bool:
    """Whether to print JSON lines: asked for with ``--json``, or stdout is no terminal."""
    return flag or not sys.stdout.isatty()


@dataclass(frozen=True)
class Column(Generic[R]):
    """A column of a table: its header, how a record shows in it, and its look."""

    header: str
    value: Callable[[R], str]
    style: str = ""
    justify: Literal["left", "right"] = "left"
    fold: bool = False
    """Long values wrap anywhere (JSON data)."""
    wrap: bool = False
    """Values wrap at spaces when the terminal is too narrow for them on one line."""
    min_width: int | None = None
    """The narrowest a narrow terminal may squeeze it."""
    optional: bool = False
    """Left out when no record has a value in it."""


class Printer(Generic[R]):
    """Prints records as JSON lines, as one table at the end, or as live lines."""

    def __init__(self, columns: Sequence[Column[R]], *, as_json: bool, live: bool = False):
        self.columns = list(columns)
        self.as_json = as_json
        self.live = live
        self.count = 0
        self._rows: list[list[str]] = []
        self._widths: dict[int, int] = {}
        self._console = Console(highlight=False)

    def add(self, record: R) -> None:
        """Print ``record`` (or keep it for the table)."""
        self.count += 1
        if self.as_json:
            out = sys.stdout.buffer
            out.write(_encoder.encode(record))
            out.write(b"\n")
            return
        row = [column.value(record) for column in self.columns]
        if self.live:
            self._console.print(self._line(row), overflow="fold")
        else:
            self._rows.append(row)

    def add_all(self, records: Iterable[R]) -> None:
        """Print ``records`` and flush them out, as a live reader must."""
        for record in records:
            self.add(record)
        self.flush()

    def flush(self) -> None:
        """Push what was printed so far to whoever reads stdout."""
        if self.as_json:
            sys.stdout.buffer.flush()
        else:
            self._console.file.flush()

    def finish(self) -> None:
        """Print the table (nothing when there are no records) and flush."""
        if self._rows:
            # The time on one line if it leaves the folding columns their minimum width.
            wrap = self._narrowest(unwrapped=True) > self._console.width
            self._console.print(self._table(wrap=wrap))
        self._rows = []
        self.flush()

    def _shown(self, rows: Sequence[Sequence[str]]) -> list[int]:
        return [
            i
            for i, column in enumerate(self.columns)
            if not column.optional or any(row[i] for row in rows)
        ]

    def _narrowest(self, *, unwrapped: bool) -> int:
        """The width the table needs with its ``wrap`` columns kept on one line or not."""
        shown = self._shown(self._rows)
        need = 2 * (len(shown) - 1)  # between columns
        for i in shown:
            column = self.columns[i]
            if column.fold or (column.wrap and not unwrapped):
                need += column.min_width or 1
            else:
                need += max(len(column.header), *(len(row[i]) for row in self._rows))
        return need

    def _table(self, *, wrap: bool) -> Table:
        shown = self._shown(self._rows)
        table = Table(
            box=box.SIMPLE_HEAD,
            header_style="bold",
            pad_edge=False,
            show_edge=False,
            collapse_padding=True,
        )
        for i in shown:
            column = self.columns[i]
            table.add_column(
                column.header,
                style=column.style or None,
                justify=column.justify,
                overflow="fold" if column.fold else "ellipsis",
                no_wrap=not (column.fold or (wrap and column.wrap)),
                min_width=column.min_width,
            )
        for row in self._rows:
            table.add_row(*(Text(row[i]) for i in shown))
        return table

    def _line(self, row: Sequence[str]) -> Text:
        """A live line: each value padded to the widest yet seen in its column."""
        line = Text()
        for i in self._shown([row]):
            column, value = self.columns[i], row[i]
            self._widths[i] = width = max(self._widths.get(i, 0), len(value))
            if line:
                line.append("  ")
            shown = value.rjust(width) if column.justify == "right" else value.ljust(width)
            line.append(shown, style=column.style)
        line.rstrip()
        return line


def _metadata(event: RecordedEvent) -> str:
    return json_text(event.metadata) if event.metadata else ""


EVENT_COLUMNS: list[Column[RecordedEvent]] = [
    Column("position", lambda e: str(e.position), "cyan", "right"),
    Column("stream", lambda e: e.stream, "bold"),
    Column("version", lambda e: str(e.version), "", "right"),
    Column("type", lambda e: e.type, "green"),
    Column("time (UTC)", lambda e: utc_text(e.time), "dim", wrap=True, min_width=12),
    Column("data", lambda e: json_text(e.data), fold=True, min_width=10),
    Column("metadata", _metadata, "dim", fold=True, optional=True, min_width=10),
]

STREAM_COLUMNS: list[Column[StreamInfo]] = [
    Column("stream", lambda s: s.name, "bold"),
    Column("version", lambda s: str(s.version), "", "right"),
]

RESULT_COLUMNS: list[Column[AppendResult]] = [
    Column("stream", lambda r: r.stream, "bold"),
    Column("first version", lambda r: str(r.first_version), "", "right"),
    Column("last version", lambda r: str(r.last_version), "", "right"),
    Column("position", lambda r: str(r.position), "cyan", "right"),
]


SUBSCRIPTION_COLUMNS: list[Column[SubscriptionInfo]] = [
    Column("name", lambda s: s.name, "bold"),
    Column("checkpoint", lambda s: str(s.checkpoint), "cyan", "right"),
    Column("head", lambda s: str(s.head), "", "right"),
    Column("lag", lambda s: str(s.lag), "yellow", "right"),
    Column("state", lambda s: s.state, "green"),
    Column("parked", lambda s: str(s.parked) if s.parked else "", "red", "right", optional=True),
    Column("last error", lambda s: s.last_error or "", "red", fold=True, optional=True),
]
