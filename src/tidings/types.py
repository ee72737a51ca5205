"""``tidings.Types``: event classes under stable names and schema versions, and the
upcasters and renames that bring stored events up to date as they are read. No I/O.

A store given a registry (``tidings.connect(url, types=types)``) names and versions
what it appends (the version goes in the reserved metadata key ``tidings.version``,
absent for version 1) and reads every event renamed and upcast to the current version
of its type, with ``RecordedEvent.payload`` built lazily as the registered class.
Stored events are never rewritten (docs/adr/0021-typed-events.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, overload

import msgspec

from tidings.codec import check_name
from tidings.errors import EventDecodeError, InvalidEvent, TypeRegistryError, UnregisteredType
from tidings.events import _DECODE, Filter, NewEvent, RecordedEvent

__all__ = ["VERSION_KEY", "Types", "Upcaster", "schema_version"]

VERSION_KEY = "tidings.version"
"""The metadata key that holds an event's schema version; absent means version 1."""

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""A pure function from one version of a type's data to the next."""

C = TypeVar("C", bound=type)
U = TypeVar("U", bound=Callable[..., Any])

_JSON_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})
_MAX_VERSION = 2**31 - 1
_MAX_PLANS = 100_000
_UNPLANNED: Any = object()


def schema_version(event: RecordedEvent | NewEvent) -> int:
    """The schema version an event records (its ``tidings.version`` metadata), 1 if none."""
    metadata = event.metadata
    version = metadata.get(VERSION_KEY, 1) if metadata else 1
    return version if type(version) is int else 1


def _is_class_instance(value: object) -> bool:
    """Whether ``value`` is of a kind of class a registry takes (not a plain JSON value)."""
    if isinstance(value, msgspec.Struct):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    return callable(getattr(value, "model_dump", None))


class _Entry:
    """A registered class: its wire name, its version, and how its data becomes it."""

    __slots__ = ("cls", "convert", "decode_event", "name", "version")

    def __init__(self, cls: type, name: str, version: int) -> None:
        self.cls = cls
        self.name = name
        self.version = version
        validate = getattr(cls, "model_validate", None)  # pydantic v2, never imported
        self.convert: Callable[[Any], Any] = (
            validate if callable(validate) else lambda data: msgspec.convert(data, cls)
        )
        self.decode_event: Callable[[RecordedEvent], Any] = self._decode  # bound once

    def _decode(self, event: RecordedEvent) -> Any:
        try:
            return self.convert(event.data)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise EventDecodeError(
                event.type,
                schema_version(event),
                event.position,
                f"data does not fit {self.cls.__qualname__}: {exc}",
            ) from exc


class _Plan:
    """How events stored under one type name are read: the name they read as, the
    version they are brought to, the upcasters from each version, the payload's class."""

    __slots__ = ("decode", "name", "only_decode", "renamed", "steps", "target")

    def __init__(
        self,
        name: str,
        renamed: bool,
        target: int,
        steps: tuple[Upcaster, ...],
        decode: Callable[[RecordedEvent], Any] | None,
    ) -> None:
        self.name = name
        self.renamed = renamed
        self.target = target
        self.steps = steps  # steps[k - 1] takes version k to k + 1
        self.decode = decode
        self.only_decode = not renamed and target == 1 and decode is not None


class Types:
    """A registry of event classes, upcasters and renames for a store.

    ``register`` puts a class (dataclass, msgspec Struct or pydantic v2 model) under a
    stable name and schema version; ``upcaster`` adds a pure function from one version
    of a type's data to the next; ``rename`` reads events stored under an old name as
    the new one. ``strict=True`` refuses to append data of an unregistered class.
    ``check`` validates the whole (it runs by itself when a store is given the registry
    and on first use after any change) and raises ``TypeRegistryError``.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self._by_name: dict[str, _Entry] = {}
        self._by_class: dict[type, _Entry] = {}
        self._upcasters: dict[str, dict[int, Upcaster]] = {}
        self._renames: dict[str, str] = {}
        self._plans: dict[str, _Plan | None] = {}
        self._filter_types: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._checked = False

    def __repr__(self) -> str:
        names = ", ".join(f"{n} v{e.version}" for n, e in sorted(self._by_name.items()))
        return f"Types({names}{', strict' if self.strict else ''})"

    # -- building ---------------------------------------------------------------------

    @overload
    def register(self, cls: C, *, name: str | None = None, version: int = 1) -> C: ...

    @overload
    def register(
        self, cls: None = None, *, name: str | None = None, version: int = 1
    ) -> Callable[[C], C]: ...

    def register(
        self, cls: C | None = None, *, name: str | None = None, version: int = 1
    ) -> C | Callable[[C], C]:
        """Register ``cls`` under ``name`` (default: its ``__name__``) at schema
        ``version`` (default 1); returns ``cls``. Without ``cls``, a class decorator."""
        if cls is None:
            return lambda c: self.register(c, name=name, version=version)
        if not isinstance(cls, type) or not (
            issubclass(cls, msgspec.Struct)
            or dataclasses.is_dataclass(cls)
            or callable(getattr(cls, "model_validate", None))
        ):
            raise TypeRegistryError(
                name or str(getattr(cls, "__name__", repr(cls))),
                "invalid",
                f"{cls!r} is not a dataclass, a msgspec Struct or a pydantic model",
            )
        wire_name = self._name(cls.__name__ if name is None else name)
        self._check_version(wire_name, version, "version")
        for taken, other in ((self._by_name.get(wire_name), cls), (self._by_class.get(cls), cls)):
            if taken is not None and (taken.cls, taken.name, taken.version) != (
                other,
                wire_name,
                version,
            ):
                raise TypeRegistryError(
                    wire_name,
                    "duplicate",
                    f"{taken.cls.__qualname__} is already registered as {taken.name!r} "
                    f"version {taken.version}",
                )
        entry = _Entry(cls, wire_name, version)
        self._by_name[wire_name] = entry
        self._by_class[cls] = entry
        self._changed()
        return cls

    def upcaster(self, name: str, from_version: int, to_version: int) -> Callable[[U], U]:
        """A decorator: the function takes type ``name``'s data at ``from_version`` and returns
        it at ``to_version`` (the next version). It must be pure: stored events are
        upcast again on every read, and snapshots rely on the same result each time."""
        name = self._name(name)
        self._check_version(name, from_version, "from_version")
        self._check_version(name, to_version, "to_version")
        if to_version != from_version + 1:
            raise TypeRegistryError(
                name,
                "invalid",
                f"an upcaster goes from one version to the next, not {from_version} -> "
                f"{to_version}",
            )
        steps = self._upcasters.setdefault(name, {})

        def add(fn: U) -> U:
            if not callable(fn):
                raise TypeRegistryError(name, "invalid", f"upcaster {fn!r} is not callable")
            if from_version in steps and steps[from_version] is not fn:
                raise TypeRegistryError(
                    name,
                    "duplicate",
                    f"two upcasters from version {from_version} to {to_version}",
                )
            steps[from_version] = fn
            self._changed()
            return fn

        return add

    def rename(self, old: str, new: str) -> None:
        """Read events stored under the type name ``old`` as ``new`` (versions carry on
        across the rename: upcasters and the class are registered under ``new``)."""
        old, new = self._name(old), self._name(new)
        if old == new:
            raise TypeRegistryError(old, "cycle", f"{old!r} is renamed to itself")
        known = self._renames.get(old)
        if known is not None and known != new:
            raise TypeRegistryError(
                old, "duplicate", f"{old!r} is renamed to both {known!r} and {new!r}"
            )
        self._renames[old] = new
        self._changed()

    def check(self) -> None:
        """Validate the registry: renames without cycles, no renamed name still
        registered or upcast, and for every type an upcaster from each version below
        its current one. Raises ``TypeRegistryError`` naming the type and the problem."""
        for old in self._renames:
            seen = [old]
            name = self._renames[old]
            while name in self._renames:
                if name in seen:
                    loop = " -> ".join([*seen[seen.index(name) :], name])
                    raise TypeRegistryError(old, "cycle", f"renames loop: {loop}")
                seen.append(name)
                name = self._renames[name]
            if old in self._by_name:
                raise TypeRegistryError(
                    old,
                    "conflict",
                    f"{old!r} is renamed to {self._renames[old]!r} but also registered "
                    f"to {self._by_name[old].cls.__qualname__}",
                )
            if self._upcasters.get(old):
                raise TypeRegistryError(
                    old,
                    "conflict",
                    f"{old!r} is renamed to {self.resolve(old)!r}: register its upcasters "
                    "under the new name",
                )
        for name in self._by_name.keys() | self._upcasters.keys():
            steps = self._upcasters.get(name, {})
            entry = self._by_name.get(name)
            current = self.current_version(name)
            if entry is not None and steps and max(steps) + 1 > entry.version:
                raise TypeRegistryError(
                    name,
                    "conflict",
                    f"an upcaster goes to version {max(steps) + 1}, past the registered "
                    f"version {entry.version} of {entry.cls.__qualname__}",
                )
            missing = [k for k in range(1, current) if k not in steps]
            if missing:
                raise TypeRegistryError(
                    name,
                    "gap",
                    f"{name!r} is at version {current} but has no upcaster from version "
                    f"{missing[0]} to {missing[0] + 1}",
                )
        self._checked = True

    # -- looking up -------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """The name events stored as ``name`` read as (``name`` itself when not renamed)."""
        seen = 0
        while name in self._renames and seen <= len(self._renames):
            name = self._renames[name]
            seen += 1
        return name

    def current_version(self, name: str) -> int:
        """The schema version type ``name`` reads at: its class's, else one past its last
        upcaster, else 1."""
        entry = self._by_name.get(name)
        if entry is not None:
            return entry.version
        steps = self._upcasters.get(name)
        return max(steps) + 1 if steps else 1

    def class_of(self, name: str) -> type | None:
        """The class registered under ``name``, if any."""
        entry = self._by_name.get(name)
        return None if entry is None else entry.cls

    def name_of(self, cls: type) -> str | None:
        """The name ``cls`` is registered under, if it is."""
        entry = self._by_class.get(cls)
        return None if entry is None else entry.name

    def upcast(self, name: str, data: Any, version: int = 1) -> tuple[str, int, Any]:
        """``(type, version, data)`` of an event stored as type ``name`` at ``version``,
        as this registry reads it: renamed and upcast to the current version (unchanged
        when stored by a newer version than the registry knows)."""
        self._ensure()
        plan = self._plan(name)
        if plan is None or version > plan.target:
            return name, version, data
        for k in range(version, plan.target):
            data = plan.steps[k - 1](data)
        return plan.name, plan.target, data

    # -- used by stores ---------------------------------------------------------------

    def prepare(self, event: NewEvent) -> NewEvent:
        """``event`` named and versioned for an append: the registered name when the type
        is left empty, the schema version in its metadata (version 1 records none).

        Raises ``InvalidEvent`` for a type that contradicts the data's class, a renamed
        type, or a bad ``tidings.version``; ``UnregisteredType`` (strict) for data of a
        class the registry does not know.
        """
        self._ensure()
        data = event.data
        cls = type(data)
        entry = None if cls in _JSON_TYPES else self._by_class.get(cls)
        if entry is not None:
            name = entry.name
            if event.type is not None and event.type not in ("", name):
                raise InvalidEvent(
                    f"event type {event.type!r} does not match the data's class "
                    f"{cls.__qualname__}, registered as {name!r}: leave the type empty "
                    f"or give {name!r}"
                )
            version = entry.version
        else:
            if self.strict and cls not in _JSON_TYPES and _is_class_instance(data):
                raise UnregisteredType(cls.__qualname__)
            if not event.type or not isinstance(event.type, str):
                return event  # the codec names what is wrong
            name = event.type
            if name in self._renames:
                raise InvalidEvent(
                    f"event type {name!r} was renamed to {self.resolve(name)!r}: append "
                    "under the new name"
                )
            plan = self._plan(name)
            if plan is None:  # a type the registry knows nothing of: as given
                return event
            version = plan.target
        metadata = event.metadata
        if isinstance(metadata, dict) and VERSION_KEY in metadata:
            given = metadata[VERSION_KEY]
            if type(given) is not int or not 1 <= given <= version:
                raise InvalidEvent(
                    f"metadata {VERSION_KEY!r} of a {name!r} event must be an int from 1 "
                    f"to {version}, not {given!r}"
                )
            if entry is not None and given != version:
                raise InvalidEvent(
                    f"data of class {cls.__qualname__} is {name!r} version {version}, but "
                    f"metadata {VERSION_KEY!r} says {given}"
                )
        elif version > 1 and (metadata is None or isinstance(metadata, dict)):
            metadata = {**(metadata or {}), VERSION_KEY: version}
        if name == event.type and metadata is event.metadata:
            return event
        return NewEvent(name, data, metadata, event.id)

    def read(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """A page of stored events as this registry reads them: renamed, upcast, and
        ready to build ``payload``. Replaces the events in ``events`` and returns it."""
        if not self._checked:
            self.check()
        plans = self._plans
        for i, event in enumerate(events):
            plan = plans.get(event.type, _UNPLANNED)
            if plan is _UNPLANNED:
                plan = self._plan(event.type)
            if plan is None:
                continue
            if plan.only_decode and VERSION_KEY not in event.metadata:
                event.__dict__[_DECODE] = plan.decode  # the common case, inline
            else:
                events[i] = self._read_one(plan, event)
        return events

    def read_filter(self, filter: Filter | None) -> Filter | None:
        """``filter`` with its types widened to the old names of each (and the new name of
        an old one), so that a read finds every event of a renamed type."""
        if filter is None or filter.types is None or not self._renames:
            return filter
        self._ensure()
        wanted = self._filter_types.get(filter.types)
        if wanted is None:
            finals = {self.resolve(t) for t in filter.types}
            extra = sorted(
                ({*finals, *(o for o in self._renames if self.resolve(o) in finals)})
                - set(filter.types)
            )
            wanted = self._filter_types[filter.types] = (*filter.types, *extra)
        if wanted == filter.types:
            return filter
        return Filter(filter.categories, filter.stream_prefix, wanted, filter.stream_pattern)

    # -- internals --------------------------------------------------------------------

    def _ensure(self) -> None:
        if not self._checked:
            self.check()

    def _changed(self) -> None:
        self._checked = False
        self._plans.clear()
        self._filter_types.clear()

    def _name(self, name: object) -> str:
        try:
            return check_name(name, "event type")
        except InvalidEvent as exc:
            raise TypeRegistryError(str(name), "invalid", str(exc)) from None

    def _check_version(self, name: str, version: object, what: str) -> None:
        if type(version) is not int or not 1 <= version <= _MAX_VERSION:
            raise TypeRegistryError(
                name, "invalid", f"{what} must be an int from 1 to {_MAX_VERSION}, not {version!r}"
            )

    def _plan(self, stored: str) -> _Plan | None:
        try:
            return self._plans[stored]
        except KeyError:
            pass
        name = self.resolve(stored)
        entry = self._by_name.get(name)
        target = self.current_version(name)
        plan: _Plan | None = None
        if name != stored or target > 1 or entry is not None:
            steps = self._upcasters.get(name, {})
            plan = _Plan(
                name,
                name != stored,
                target,
                tuple(steps[k] for k in range(1, target)),
                None if entry is None else entry.decode_event,
            )
        if len(self._plans) < _MAX_PLANS:
            self._plans[stored] = plan
        return plan

    def _read_one(self, plan: _Plan, event: RecordedEvent) -> RecordedEvent:
        metadata = event.metadata
        version = metadata.get(VERSION_KEY, 1) if metadata else 1
        if type(version) is not int or version < 1:
            raise EventDecodeError(
                event.type,
                version,
                event.position,
                f"the stored schema version (metadata {VERSION_KEY!r}) is not an int >= 1",
            )
        decode = plan.decode
        data = event.data
        if version > plan.target:  # written by a newer registry: its JSON, under its name
            if not plan.renamed:
                return event
            decode = None
        elif version < plan.target:
            for k in range(version, plan.target):
                try:
                    data = plan.steps[k - 1](data)
                except Exception as exc:
                    raise EventDecodeError(
                        event.type, version, event.position, f"upcaster {k} -> {k + 1}: {exc!r}"
                    ) from exc
            metadata = {**metadata, VERSION_KEY: plan.target}
        elif not plan.renamed:
            if decode is not None:
                event.__dict__[_DECODE] = decode
            return event
        read = RecordedEvent(
            event.id,
            event.stream,
            plan.name,
            data,
            metadata,
            event.version,
            event.position,
            event.time,
        )
        if decode is not None:
            read.__dict__[_DECODE] = decode
        return read
