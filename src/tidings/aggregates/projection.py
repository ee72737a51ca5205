"""Projections, as a class with ``on_<Type>`` methods or a ``Fold`` function, behind one adapter."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from tidings.codec import encode_json
from tidings.errors import InvalidEvent, InvalidInput, SnapshotError
from tidings.events import RecordedEvent

S = TypeVar("S")
_MAX_NAME = 255
_MAX_VERSION = 2**31 - 1  # an integer column on PostgreSQL


@dataclass(frozen=True)
class Projected(Generic[S]):
    """A stream's state as loaded by ``project``.

    ``version`` is the stream's last version folded into ``state`` (0-based), or None
    when the stream does not exist (``state`` is then the projection's initial state).
    ``folded`` counts the events this load read and folded: those after the snapshot it
    started from, or all of them.
    """

    state: S
    version: int | None
    folded: int = 0


@dataclass(frozen=True)
class Fold(Generic[S]):
    """A projection written as a function: ``fold(state, event) -> state`` from ``initial``.

    ``initial`` is deep-copied for every load, so a fold that mutates its state in
    place never changes it. ``name`` and ``version`` name and version its snapshots
    (change ``version`` when ``fold`` changes what it computes). Snapshots store the
    state as ``msgspec.to_builtins`` gives it and restore it with ``msgspec.convert``
    to ``state_type`` (by default the type of ``initial``; give e.g. ``dict[int, str]``
    when JSON alone would not bring the state back as it was).
    """

    name: str
    initial: S
    fold: Callable[[S, RecordedEvent], S]
    version: int = 1
    state_type: Any = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_version(self.version, self.name)
        if not callable(self.fold):
            raise InvalidInput(f"Fold {self.name!r}: fold must be callable, not {self.fold!r}")


class Folder(Protocol[S]):
    """What loading needs of a projection, whichever form it was written in."""

    name: str
    version: int

    def initial(self) -> S:
        """A fresh state, before any event."""
        ...

    def apply(self, state: S, event: RecordedEvent) -> S:
        """The state after ``event``."""
        ...

    def dump(self, state: S) -> str:
        """The state as JSON text, for a snapshot."""
        ...

    def restore(self, text: str) -> S:
        """A state from a snapshot's JSON text."""
        ...


def as_folder(projection: type[S] | Fold[S]) -> Folder[S]:
    """The adapter for a projection class or a ``Fold``."""
    if isinstance(projection, Fold):
        return FunctionFolder(projection)
    if isinstance(projection, type):
        return ClassFolder(projection)
    raise InvalidInput(
        "a projection is a class (with on_<EventType> methods) or a tidings.Fold, "
        f"not {projection!r}"
    )


class FunctionFolder(Generic[S]):
    """A ``Fold`` seen as a ``Folder``."""

    def __init__(self, fold: Fold[S]) -> None:
        self.name = fold.name
        self.version = fold.version
        self._fold = fold
        initial = fold.initial
        self._state_type: Any = fold.state_type or (Any if initial is None else type(initial))

    def initial(self) -> S:
        """A deep copy of the Fold's initial state."""
        return copy.deepcopy(self._fold.initial)

    def apply(self, state: S, event: RecordedEvent) -> S:
        """The Fold's function applied to the state and the event."""
        return self._fold.fold(state, event)

    def dump(self, state: S) -> str:
        """The state as JSON text."""
        return _to_json(self.name, state)

    def restore(self, text: str) -> S:
        """The state decoded as ``state_type``."""
        return typing.cast(S, _decode(self.name, text, self._state_type))


class ClassFolder(Generic[S]):
    """A projection class seen as a ``Folder``: one instance is the state."""

    def __init__(self, cls: type[S]) -> None:
        self._cls = cls
        name = _class_attribute(cls, "name")
        self.name = cls.__name__ if name is None else _check_name(name)
        version = _class_attribute(cls, "version")
        self.version = 1 if version is None else _check_version(version, self.name)
        self._structured = issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)
        self._custom_snapshot = callable(getattr(cls, "snapshot", None))
        self._custom_restore = callable(getattr(cls, "restore", None))
        self._hints: dict[str, Any] | None = None

    def initial(self) -> S:
        """A new instance, made without arguments."""
        return self._cls()

    def apply(self, state: S, event: RecordedEvent) -> S:
        """Call ``on_<event.type>`` of the state, if it has one; other types are ignored."""
        handler = getattr(state, "on_" + event.type, None)
        if handler is not None:
            result = handler(event)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise InvalidInput(
                    f"{self._cls.__name__}.on_{event.type} must be a plain method: "
                    "projections fold synchronously (do I/O in the command instead)"
                )
        return state

    def dump(self, state: S) -> str:
        """``snapshot()`` if the class defines it, else its fields (or ``vars``) as JSON."""
        if self._custom_snapshot:
            return _to_json(self.name, typing.cast(Any, state).snapshot())
        return _to_json(self.name, state if self._structured else vars(state))

    def restore(self, text: str) -> S:
        """``restore(data)`` if the class defines it, else its fields set from the snapshot."""
        cls = self._cls
        if self._custom_restore:
            return typing.cast(S, typing.cast(Any, cls).restore(_decode(self.name, text, Any)))
        if self._structured:
            return typing.cast(S, _decode(self.name, text, cls))
        data = _decode(self.name, text, Any)
        if not isinstance(data, dict):
            raise SnapshotError(self.name, f"snapshot holds {type(data).__name__}, not an object")
        instance = cls()
        hints = self._type_hints()
        for key, value in data.items():
            hint = hints.get(key)
            setattr(instance, key, value if hint is None else _convert(self.name, value, hint))
        return instance

    def _type_hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                hints = typing.get_type_hints(self._cls)
            except Exception:  # unresolvable annotations: attributes come back as JSON gives them
                hints = {}
            self._hints = {k: v for k, v in hints.items() if typing.get_origin(v) is not ClassVar}
        return self._hints


def _class_attribute(cls: type[Any], attribute: str) -> Any:
    """A class-level ``name`` or ``version``, unless it is one of the state's own fields."""
    if dataclasses.is_dataclass(cls) and attribute in {f.name for f in dataclasses.fields(cls)}:
        return None
    if issubclass(cls, msgspec.Struct) and attribute in cls.__struct_fields__:
        return None
    return getattr(cls, attribute, None)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or not name.isprintable():
        raise InvalidInput(
            f"a projection name must be a printable str of 1 to {_MAX_NAME} characters, "
            f"not {name!r}"
        )
    return name


def _check_version(version: object, name: str) -> int:
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not 0 <= version <= _MAX_VERSION
    ):
        raise InvalidInput(
            f"projection {name!r}: version must be an int from 0 to {_MAX_VERSION}, not {version!r}"
        )
    return version


def _to_json(name: str, value: Any) -> str:
    try:
        return encode_json(msgspec.to_builtins(value), "snapshot state")
    except (TypeError, ValueError, InvalidEvent) as exc:
        raise SnapshotError(name, f"the state has no JSON form: {exc}") from exc


def _decode(name: str, text: str, to: Any) -> Any:
    try:
        return msgspec.json.decode(text, type=to)
    except (msgspec.DecodeError, TypeError) as exc:
        raise _unrestorable(name, exc) from exc


def _convert(name: str, data: Any, to: Any) -> Any:
    # Not strict: an attribute typed dict[int, ...] comes back from JSON with str keys.
    try:
        return msgspec.convert(data, to, strict=False)
    except (msgspec.ValidationError, TypeError) as exc:
        raise _unrestorable(name, exc) from exc


def _unrestorable(name: str, exc: Exception) -> SnapshotError:
    return SnapshotError(
        name,
        f"the stored snapshot does not restore ({exc}); if the projection's state "
        "changed shape, raise its version",
    )
