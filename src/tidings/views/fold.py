"""Folding a batch of events into the latest value per key: evt's new/mod/del, or a reducer.

Pure: the caller reads the stored state of the keys a batch touches, ``fold_batch``
computes what changes, and the caller writes it in the checkpoint's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tidings.codec import decode_json, encode_json
from tidings.errors import InvalidEvent, ViewError
from tidings.events import RecordedEvent

Reducer = Callable[[Any, RecordedEvent], Any]
"""``reducer(current_value_or_None, event) -> new_value_or_None``; None deletes the key."""

EVT_TYPES = ("new", "mod", "del")
"""The event types of evt's latest-state model, folded when a view has no reducer."""

Stored = tuple[str | None, int]
"""A key's stored state: its value as JSON text (None: deleted) and the position that set it."""


def key_of(stream: str) -> str:
    """The key of a stream ``<category>-<key>`` (empty for a stream with no ``-``)."""
    return stream.partition("-")[2]


def evt_reduce(current: Any, event: RecordedEvent) -> Any:
    """evt's model: ``new`` sets the whole value, ``mod`` shallow-merges a partial object
    into it (creating the key when missing), ``del`` removes the key."""
    if event.type == "del":
        return None
    data = event.data
    if not isinstance(data, dict):
        raise TypeError(f"a {event.type!r} event needs a JSON object, not {type(data).__name__}")
    if event.type == "new":
        return data
    if event.type == "mod":
        merged = dict(current) if isinstance(current, dict) else {}
        merged.update(data)
        return merged
    return current  # not one of evt's types: the value stays


def fold_batch(
    view: str,
    batch: Iterable[RecordedEvent],
    stored: dict[str, Stored],
    reducer: Reducer,
) -> dict[str, Stored]:
    """The keys ``batch`` changes, each with its new JSON text (None: deleted) and the
    position of the event that changed it last.

    ``stored`` holds the current state of the batch's keys (absent: never set). An event
    at or below a key's stored position was folded already (the checkpoint was reset
    behind it) and is skipped, so re-delivery never folds an event twice. An event whose
    reducer raises, or whose result has no JSON form, raises ``ViewError``.
    """
    latest: dict[str, Stored] = {}
    values: dict[str, Any] = {}
    for event in batch:
        key = key_of(event.stream)
        if not key:
            continue  # the stream names no key: nothing of the view's
        text, at = latest.get(key) or stored.get(key) or (None, 0)
        if event.position <= at:
            continue
        current = values[key] if key in values else (None if text is None else decode_json(text))
        try:
            new = reducer(current, event)
            new_text = None if new is None else encode_json(new, "view value")
        except InvalidEvent as exc:  # the value has no JSON form
            raise ViewError(view, event.position, str(exc)) from exc
        except Exception as exc:
            raise ViewError(view, event.position, f"{type(exc).__name__}: {exc}") from exc
        if new_text == text:
            continue  # no change: nothing to write or to tell watchers
        latest[key] = (new_text, event.position)
        values[key] = None if new_text is None else decode_json(new_text)
    # A key that ends the batch as it began it (absent counts as deleted) did not change.
    return {k: v for k, v in latest.items() if v[0] != stored.get(k, (None, 0))[0]}
