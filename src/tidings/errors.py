"""The tidings error tree.

Every error tidings raises on purpose derives from ``TidingsError``::

    TidingsError
    ├── InvalidInput            bad arguments: limits, positions, filters
    │   ├── InvalidEvent        bad events: names, types, data, sizes, empty batches
    │   │   └── UnregisteredType  a strict type registry refused data of an unregistered class
    │   ├── InvalidExpectedVersion
    │   ├── InvalidChannel      a notifier channel (or hub topic) no backend can carry
    │   ├── PayloadTooLarge     a notification over the backend's payload limit
    │   ├── InvalidHubKey       a hub key that is not a tuple of 64-bit signed ints
    │   ├── InvalidHubValue     a hub value with no exact JSON form
    │   ├── InvalidHubPayload   a hub payload that does not decode to a key and value
    │   └── NotFound            (also a LookupError) no such subscription, view or resource (404)
    ├── ConfigurationError      bad URL, unknown scheme, missing extra
    │   └── TypeRegistryError   a type registry with a gap, a cycle, a duplicate or a conflict
    ├── AccessDenied            (also a PermissionError) a server refused the caller (401/403)
    ├── WrongExpectedVersion    optimistic concurrency conflict (nothing written)
    ├── CheckpointConflict      a transaction's checkpoint was not below its new position
    ├── StoreChanged            positions of one store offered to another (or to a restore)
    ├── Offline                 a satellite cannot reach its server and may not accept a write
    ├── AlreadyExists           a name is taken (an event stream's)
    ├── DuplicateEventId        an event id already stored with different content
    ├── StoreUnavailable        the database cannot be reached (URL shown without password)
    ├── StoreClosed             the store was used after close()
    ├── NotifierUnavailable     the pub/sub server cannot be reached (URL without password)
    ├── NotifierClosed          the notifier was used after close()
    ├── SubscriptionOverflow    a subscription with overflow="disconnect" fell behind
    ├── MissingOutput           (also a KeyError) a batch function left an input out
    ├── BatcherClosed           a batcher was used after close()
    ├── SnapshotError           a projection state with no JSON form, or a stale snapshot
    ├── EventDecodeError        a stored event its registered upcasters or class cannot read
    ├── BackupError             a backup file or restore target refused (incomplete, corrupt,
    │                           newer format, non-empty target, unsupported store)
    ├── ViewError               an event a state view cannot fold (parked by default)
    └── ViewClosed              a state view was used after close()

Driver errors are wrapped at the edge of each backend and kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID


class TidingsError(Exception):
    """Root of every error tidings raises on purpose."""


class InvalidInput(TidingsError, ValueError):
    """An argument tidings cannot act on; nothing was read or written."""


class InvalidEvent(InvalidInput):
    """Input that can never be stored: a bad stream name, type, payload or batch."""


class InvalidExpectedVersion(InvalidInput, TypeError):
    """An expected version that is not ANY, NO_STREAM, STREAM_EXISTS or an int >= 0."""


class ConfigurationError(TidingsError, ValueError):
    """A URL or option that tidings cannot act on."""


class WrongExpectedVersion(TidingsError):
    """The stream was not at the version the caller expected; nothing was written."""

    def __init__(self, stream: str, expected: Any, actual: int | None) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        shown = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream!r}: expected {expected}, found {shown}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stream, self.expected, self.actual))


class CheckpointConflict(TidingsError):
    """A transaction would move a named checkpoint to a position it is not below (it
    stands at or past it: that input was processed already); nothing was written."""

    def __init__(self, name: str, position: int, current: int | None) -> None:
        self.name = name
        self.position = position
        self.current = current
        super().__init__(
            f"checkpoint {name!r} stands at {current}, not below {position}: nothing written"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.position, self.current))


class StoreChanged(TidingsError):
    """A position of one store was offered to another: the server's store is not the
    one the reader's positions belong to (another store, or this one restored). Start
    over from a position of the store as it is now (``current``)."""

    def __init__(self, expected: str, current: str) -> None:
        self.expected = expected
        self.current = current
        super().__init__(
            f"the store is {current}, not {expected} whose positions were given: start over"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.expected, self.current))


class Offline(TidingsError):
    """A satellite's server could not be reached and its authority does not allow this
    write offline. ``pending`` is None when nothing was recorded; otherwise the write
    was recorded before the server went away, as local transaction ``pending``, and will
    be pushed when the server is back (its verdict then says what became of it)."""

    def __init__(self, message: str, pending: int | None = None) -> None:
        self.pending = pending
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.pending))


class DuplicateEventId(TidingsError):
    """An event id is already stored with different content (or in another place)."""

    def __init__(self, event_id: UUID, stream: str, reason: str = "different content") -> None:
        self.event_id = event_id
        self.stream = stream
        self.reason = reason
        super().__init__(f"event id {event_id} appended to {stream!r} is already stored: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.event_id, self.stream, self.reason))


class StoreUnavailable(TidingsError, ConnectionError):
    """The database could not be reached or failed while in use."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"store unavailable at {url}" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.detail))


class StoreClosed(TidingsError, RuntimeError):
    """The store was used after it was closed."""


class InvalidChannel(InvalidInput):
    """A channel name no notifier backend can carry (or a bad hub topic)."""


class PayloadTooLarge(InvalidInput):
    """A notification payload over the backend's limit; nothing was published."""

    def __init__(self, size: int, limit: int, backend: str) -> None:
        self.size = size
        self.limit = limit
        self.backend = backend
        super().__init__(
            f"payload of {size} bytes is over the {backend} notifier's limit of {limit} bytes"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size, self.limit, self.backend))


class NotifierUnavailable(TidingsError, ConnectionError):
    """The pub/sub server could not be reached, or the connection is down right now."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"notifier unavailable at {url}" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.detail))


class NotifierClosed(TidingsError, RuntimeError):
    """The notifier (or a subscription) was used after it was closed."""


class SubscriptionOverflow(TidingsError):
    """A subscription whose policy is ``overflow="disconnect"`` fell behind its bound."""

    def __init__(self, channels: tuple[str, ...], maxsize: int) -> None:
        self.channels = channels
        self.maxsize = maxsize
        super().__init__(
            f"subscription to {', '.join(channels) or '(no channels)'} fell more than "
            f"{maxsize} messages behind and was disconnected"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.channels, self.maxsize))


class InvalidHubKey(InvalidInput, TypeError):
    """A hub event key that is not a tuple of ints in [-2**63, 2**63 - 1]; nothing published."""


class InvalidHubValue(InvalidInput, TypeError):
    """A hub event value with no exact JSON form (NaN, objects, non-str keys, huge ints)."""


class InvalidHubPayload(InvalidInput):
    """A hub payload that does not decode to a key and a value (a foreign or broken sender)."""


class MissingOutput(TidingsError, KeyError):
    """The batch function returned no output for ``input``; the callers that asked get this."""

    def __init__(self, input: Any) -> None:
        self.input = input
        super().__init__(input)

    def __str__(self) -> str:
        return f"the batch function returned no output for {self.input!r}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.input,))


class BatcherClosed(TidingsError, RuntimeError):
    """A batcher was given work after ``close()``."""


class SnapshotError(TidingsError):
    """A projection's state has no JSON form, or a stored snapshot no longer restores.

    A snapshot that no longer fits the projection's code means the code changed without
    its ``version`` changing: bump ``version`` and old snapshots are ignored.
    """

    def __init__(self, projection: str, detail: str) -> None:
        self.projection = projection
        self.detail = detail
        super().__init__(f"projection {projection!r}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.projection, self.detail))


class ViewError(TidingsError):
    """An event a state view cannot fold: ``new`` or ``mod`` data that is not a JSON
    object, or a reducer result with no JSON form. The view's error policy (``park`` by
    default) sets the event aside; the view goes on with the next one."""

    def __init__(self, view: str, position: int, detail: str) -> None:
        self.view = view
        self.position = position
        self.detail = detail
        super().__init__(f"view {view!r} cannot fold the event at position {position}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.view, self.position, self.detail))


class ViewClosed(TidingsError, RuntimeError):
    """A state view was used after ``close()``."""


class NotFound(InvalidInput, LookupError):
    """No such resource: a subscription, a view, or a server route."""


class AlreadyExists(TidingsError):
    """A name is taken: an event stream of that name exists already (409)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} exists already")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what,))


class AccessDenied(TidingsError, PermissionError):
    """A server refused the caller: no or bad credentials (401) or not allowed (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.code, str(self)))


class TypeRegistryError(ConfigurationError):
    """A type registry that cannot be used: ``problem`` is ``"gap"`` (a missing upcaster),
    ``"cycle"`` (renames that loop), ``"duplicate"`` (a name, class, step or rename given
    twice) or ``"conflict"`` (names or versions that contradict each other)."""

    def __init__(self, type: str, problem: str, detail: str) -> None:
        self.type = type
        self.problem = problem
        self.detail = detail
        super().__init__(f"event type {type!r}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type, self.problem, self.detail))


class UnregisteredType(InvalidEvent):
    """A strict type registry refused event data of a class it does not know; nothing
    was written."""

    def __init__(self, class_name: str) -> None:
        self.class_name = class_name
        super().__init__(
            f"event data of class {class_name} is not registered with the store's types "
            "(strict=True): register it with types.register"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.class_name,))


class EventDecodeError(TidingsError):
    """A stored event that its registered upcasters or class cannot read: an upcaster
    that raised, a stored schema version that is not an int, or data that does not fit
    the registered class."""

    def __init__(self, type: str, version: Any, position: int, detail: str) -> None:
        self.type = type
        self.version = version
        self.position = position
        self.detail = detail
        super().__init__(f"event at position {position} ({type!r}, version {version!r}): {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type, self.version, self.position, self.detail))


class BackupError(TidingsError):
    """A backup or a restore refused, nothing written: ``problem`` is ``"incomplete"``
    (a backup file whose backup never finished), ``"corrupt"`` (not a backup file, or one
    damaged or truncated), ``"newer_format"`` (written by a newer tidings),
    ``"not_empty"`` (a restore target holding data, without ``force``), ``"exists"`` (a
    backup target that is already there) or ``"unsupported"`` (a store that cannot be
    backed up or restored into) or ``"missing"`` (no backup file there)."""

    def __init__(self, problem: str, where: str, detail: str) -> None:
        self.problem = problem
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problem, self.where, self.detail))
