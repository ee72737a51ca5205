"""Command handlers: load an aggregate, decide new events, append at the loaded version, retry."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias, TypeVar

from tidings.aggregates.loading import check_snapshot_every, load_with
from tidings.aggregates.projection import Fold, as_folder
from tidings.aggregates.streams import StreamStore
from tidings.errors import InvalidInput, WrongExpectedVersion
from tidings.events import NO_STREAM, AppendResult, NewEvent

S = TypeVar("S")
Decision: TypeAlias = Sequence[NewEvent] | None
Command: TypeAlias = Callable[[S], Decision | Awaitable[Decision]]


async def execute(
    store: StreamStore,
    stream: str,
    command: Command[S],
    aggregate: type[S] | Fold[S],
    *,
    retries: int = 3,
    snapshot_every: int | None = None,
) -> AppendResult | None:
    """Load ``stream`` into ``aggregate``, run ``command`` on its state, append what it decides.

    ``command(state)`` (sync or async) returns the new events; an empty list (or None)
    appends nothing and returns None. They are appended with the version the state was
    loaded at as the expected version (``NO_STREAM`` for a stream that does not exist).
    When another writer got there first (``WrongExpectedVersion``), the stream is
    loaded again and the command run again, up to ``retries`` more times; then the last
    ``WrongExpectedVersion`` is raised. An exception from the command propagates as it
    is, and nothing is appended. Loading uses snapshots as ``project`` does.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInput(f"retries must be an int >= 0, not {retries!r}")
    every = check_snapshot_every(snapshot_every)
    if not callable(command):
        raise InvalidInput(f"command must be callable, not {command!r}")
    folder = as_folder(aggregate)
    attempt = 0
    while True:
        loaded = await load_with(store, stream, folder, every)
        decided = command(loaded.state)
        if inspect.isawaitable(decided):
            decided = await decided
        if not decided:
            return None
        expected = NO_STREAM if loaded.version is None else loaded.version
        try:
            return await store.append(stream, list(decided), expected_version=expected)
        except WrongExpectedVersion:
            if attempt >= retries:
                raise
            attempt += 1
