"""Loading a stream's state through a projection, starting from its snapshot when it has one."""

from __future__ import annotations

from typing import TypeVar

from tidings.aggregates.projection import Fold, Folder, Projected, as_folder
from tidings.aggregates.snapshots import snapshots_of
from tidings.aggregates.streams import StreamStore
from tidings.errors import InvalidInput

S = TypeVar("S")


async def project(
    store: StreamStore,
    stream: str,
    projection: type[S] | Fold[S],
    *,
    snapshot_every: int | None = None,
    snapshots: bool = True,
) -> Projected[S]:
    """Fold ``stream``'s events into state with ``projection`` (a class or a ``Fold``).

    Starts from the latest snapshot of ``stream`` taken by this projection's name and
    version, if any (a snapshot of another version is ignored), and reads only the
    events after it. With ``snapshot_every=N``, when this load folded N events or more
    it writes a new snapshot. ``snapshots=False`` ignores stored snapshots and folds
    from zero (with ``snapshot_every``, it rebuilds the snapshot). A stream that does not
    exist loads as the initial state with version None. Snapshots are kept for the
    memory, SQLite and PostgreSQL stores; on any other store loading starts from zero
    and writing one raises ``ConfigurationError``.
    """
    every = check_snapshot_every(snapshot_every)
    folder = as_folder(projection)
    return await _load(store, stream, folder, snapshots, every)


async def save_snapshot(
    store: StreamStore, stream: str, projection: type[S] | Fold[S]
) -> Projected[S]:
    """Load ``stream`` with ``projection`` and snapshot its state now; return what was loaded.

    Writes nothing for a stream that does not exist, or when the snapshot loaded is
    already up to date with the stream.
    """
    return await _load(store, stream, as_folder(projection), True, 1)


async def load_with(
    store: StreamStore, stream: str, folder: Folder[S], snapshot_every: int | None
) -> Projected[S]:
    """``project`` for an adapter already made (commands reload with it on every attempt)."""
    return await _load(store, stream, folder, True, snapshot_every)


async def _load(
    store: StreamStore,
    stream: str,
    folder: Folder[S],
    use_snapshots: bool,
    snapshot_every: int | None,
) -> Projected[S]:
    if not isinstance(stream, str) or not stream:
        raise InvalidInput(f"a stream name must be a non-empty str, not {stream!r}")
    state = folder.initial()
    version: int | None = None
    if use_snapshots:
        snapshot = await snapshots_of(store).load(stream, folder.name, folder.version)
        if snapshot is not None:
            state = folder.restore(snapshot.state)
            version = snapshot.version
    folded = 0
    start = 0 if version is None else version + 1
    async for event in store.read_stream(stream, from_version=start):
        state = folder.apply(state, event)
        version = event.version
        folded += 1
    if snapshot_every is not None and version is not None and folded >= snapshot_every:
        await snapshots_of(store).save(
            stream, folder.name, folder.version, version, folder.dump(state)
        )
    return Projected(state, version, folded)


def check_snapshot_every(value: int | None) -> int | None:
    """Validate ``snapshot_every``: None, or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"snapshot_every must be an int >= 1 or None, not {value!r}")
    return value
