"""What projections and commands need of a store: reading and appending one stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from tidings.events import ANY, AppendResult, Expected, NewEvent, RecordedEvent


class StreamStore(Protocol):
    """What projections and commands need of a store: reading and appending one stream.

    Every tidings store (what ``tidings.connect`` returns) is one. Snapshots are kept
    for the memory, SQLite and PostgreSQL stores; any other store loads from zero.
    """

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from a version."""
        ...

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> AppendResult:
        """Append events to one stream if it is at the expected version."""
        ...
