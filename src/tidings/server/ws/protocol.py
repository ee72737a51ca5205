"""The ``tidings.v1`` messages: what a client may send, what the server sends, close codes.

docs/protocol.md is the page a client is written from; this module is its code. Client
messages are msgspec Structs tagged by ``type`` and decoded in one step, so a wrong
field is named in the error reply. Server messages are encoded here too, ``events``
from the JSON each event already has (the live log encodes an event once for every
connection).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tidings.wire import MAX_POSITION, encoder

SUBPROTOCOL = "tidings.v1"
TOKEN_PREFIX = "tidings.token."
"""A browser, which cannot set headers, offers ``tidings.token.<key or JWT>`` beside
``tidings.v1`` in ``Sec-WebSocket-Protocol``; the server accepts ``tidings.v1`` only."""

# Close codes (docs/protocol.md says, for each, whether to reconnect).
NORMAL = 1000
POLICY = 1008  # auth, origin or scope; an expired token
TOO_BIG = 1009
INTERNAL = 1011
RESTARTING = 1012  # reconnect and resume
TRY_LATER = 1013  # slow consumer or overload: reconnect after a pause, resume
UNSUPPORTED_PROTOCOL = 4000  # the client did not offer tidings.v1
AUTH_TIMEOUT = 4001  # no credentials in the handshake and no auth message in time

Position = Annotated[int, msgspec.Meta(ge=0, le=MAX_POSITION)]
Id = str | int | None
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class WsFilter(msgspec.Struct, forbid_unknown_fields=True):
    """Which events a subscription wants (each given criterion must match)."""

    categories: list[Name] | None = None
    types: list[Name] | None = None
    stream_prefix: str | None = None
    stream_pattern: str | None = None


class _Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    id: Id = None


class Subscribe(_Message, tag="subscribe"):
    """Follow the log from ``from_position`` (exclusive; or ``from: "end"``), filtered."""

    sub: Name
    filter: WsFilter | None = None
    from_position: Position | None = None
    start: Literal["start", "end"] | None = msgspec.field(default=None, name="from")
    ack: Literal["manual", "auto"] = "manual"
    store: str | None = None
    """The store ``from_position`` belongs to (the ``store`` of an earlier ``ready``):
    another one is refused with ``store_changed``."""


class Ack(_Message, tag="ack"):
    """The client has handled ``sub``'s batches up to ``batch``."""

    sub: Name
    batch: Annotated[int, msgspec.Meta(ge=1)]


class Unsubscribe(_Message, tag="unsubscribe"):
    """Stop ``sub``."""

    sub: Name


class Ping(_Message, tag="ping"):
    """Ask for a ``pong``."""


class Auth(_Message, tag="auth"):
    """Credentials sent as the first message (when the handshake carried none)."""

    token: str


class Refresh(_Message, tag="refresh"):
    """A new token for a connection whose token is about to expire."""

    token: str


class Listen(_Message, tag="listen"):
    """Receive ``channel``'s notifications (from every node)."""

    channel: Name


class Unlisten(_Message, tag="unlisten"):
    """Stop receiving ``channel``."""

    channel: Name


class Publish(_Message, tag="publish"):
    """Notify every listener of ``channel``: pghub's topic, key (ints) and value."""

    channel: Name
    key: list[int] = msgspec.field(default_factory=list)
    value: Any = None


class Watch(_Message, tag="watch"):
    """A view's values for ``keys`` (None: every key), then their changes."""

    watch: Name
    view: Name
    keys: list[Annotated[str, msgspec.Meta(max_length=1024)]] | None = None


class Want(_Message, tag="want"):
    """Keep ``watch`` alive for another ``watch_ttl`` seconds."""

    watch: Name


class Unwatch(_Message, tag="unwatch"):
    """End ``watch``."""

    watch: Name


ClientMessage = (
    Subscribe
    | Ack
    | Unsubscribe
    | Ping
    | Auth
    | Refresh
    | Listen
    | Unlisten
    | Publish
    | Watch
    | Want
    | Unwatch
)
decoder = msgspec.json.Decoder(ClientMessage)
_loose = msgspec.json.Decoder()


class BadMessage(Exception):
    """A message the server cannot take: its ``code``, and the ``id`` it carried."""

    def __init__(self, code: str, message: str, id: Id = None) -> None:
        super().__init__(message)
        self.code = code
        self.id = id


def decode(raw: str | bytes) -> ClientMessage:
    """A client message, or ``BadMessage`` saying what is wrong with it."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = "unknown_type" if text.endswith("at `$.type`") else "invalid_message"
        if text.startswith("Object missing required field `type`"):
            code = "unknown_type"
        elif text.startswith("Expected `object`, got") and " - at `" not in text:
            raise BadMessage("invalid_json", "a message is a JSON object") from None
        raise BadMessage(code, text, _id_of(raw)) from None
    except msgspec.DecodeError as exc:
        raise BadMessage("invalid_json", f"the message is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadMessage("invalid_json", "the message nests too deeply to decode") from None


def _id_of(raw: str | bytes) -> Id:
    try:
        found = _loose.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    value = found.get("id") if isinstance(found, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def reply(type_: str, id: Id = None, **fields: Any) -> bytes:
    """A server message of ``type_`` with ``fields`` (and the ``id`` it answers)."""
    body: dict[str, Any] = {"type": type_}
    if id is not None:
        body["id"] = id
    body.update(fields)
    return encoder.encode(body)


def error(code: str, message: str, id: Id = None) -> bytes:
    """An ``error`` message; the socket stays open."""
    return reply("error", id, error=code, message=message)


def events(sub_json: bytes, batch: int, payloads: list[bytes], last_position: int) -> bytes:
    """An ``events`` message from the events' JSON, encoded once by the live log."""
    return b'{"type":"events","sub":%s,"batch":%d,"events":[%s],"last_position":%d}' % (
        sub_json,
        batch,
        b",".join(payloads),
        last_position,
    )
