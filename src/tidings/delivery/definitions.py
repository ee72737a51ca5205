"""Event-stream definitions: what a stream's creator set, the defaults beside it, and
the checks that refuse a definition before anything is stored. No I/O.

A definition keeps only what was set (``None`` elsewhere); ``effective`` fills the rest
from ``Defaults`` (the server's config) at run time, so a changed default reaches every
stream that did not set its own, as FireFly's do.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import msgspec

from tidings.delivery.signing import BadSecret, parse_secret
from tidings.delivery.ssrf import AddressPolicy, BadWebhookUrl, ForbiddenAddress, check_url
from tidings.errors import InvalidInput
from tidings.events import Filter

MAX_BATCH_SIZE = 10_000
METHODS = ("POST", "PUT", "PATCH")
"""Webhook methods: the batch travels in the body, so only methods with one."""

Name = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
]
"""A stream name: letters, digits, ``.``, ``_``, ``~``, ``-``; not a UUID's shape
either (names and ids share ``/eventstreams/{name_or_id}``)."""
Seconds = Annotated[float, msgspec.Meta(gt=0, le=365 * 86400)]
Names = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
Position = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A position: what every backend can hold (a signed 64-bit integer)."""
_ANY_ADDRESS = AddressPolicy(
    allow=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_OWN_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length"}
)


class StreamFilter(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Which events a stream delivers: every criterion given must match.
    ``stream_pattern`` is FireFly's topic filter: a regular expression the whole
    stream name must match."""

    categories: Names | None = None
    types: Names | None = None
    stream_pattern: str | None = None

    def to_filter(self) -> Filter:
        """The store's ``Filter`` for these criteria."""
        return Filter(
            categories=self.categories, types=self.types, stream_pattern=self.stream_pattern
        )


class Webhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Where and how a webhook stream posts its batches. ``tls`` names a TLS setting of
    the server's config, ``proxy`` one of its proxies (the operator's egress proxy then
    judges the target's address: see ``tidings.delivery.webhook``); ``secret``
    (``whsec_...``) signs deliveries: one is made when none is given, and it is never
    shown again after the create."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = {}
    timeout: Seconds | None = None
    tls: str | None = None
    proxy: str | None = None
    secret: str | None = None
    allow_private: bool | None = None


class WebSocketDelivery(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """How a websocket stream hands batches to attached consumers: one at a time round
    robin (``load_balance``) or every batch to each (``broadcast``). ``ack_timeout``:
    seconds before an unacked batch goes to another consumer. With ``wait`` (the
    default) a stream with no consumer attached waits rather than drop batches."""

    distribution: Literal["load_balance", "broadcast"] = "load_balance"
    ack_timeout: Seconds | None = None
    wait: bool = True


class Definition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An event stream as its creator defined it (``POST /eventstreams``). Unset fields
    take the server's defaults when the stream runs."""

    name: Name
    type: Literal["webhook", "websocket"]
    filter: StreamFilter = StreamFilter()
    initial_position: Literal["beginning", "end"] | Position = "beginning"
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] | None = None
    batch_timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] | None = None
    retry_timeout: Seconds | None = None
    blocked_retry_delay: Seconds | None = None
    error_handling: Literal["block", "skip"] | None = None
    disable_after: Seconds | None = None
    webhook: Webhook | None = None
    websocket: WebSocketDelivery | None = None


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A named TLS setting of the server's config: a CA bundle to trust, a client
    certificate and key to present, and whether to verify the receiver at all."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


class Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The server's defaults for what a definition leaves unset (FireFly's and Svix's
    figures), and the limits of the runtime."""

    batch_size: int = 50
    batch_timeout: float = 0.5
    retry_timeout: float = 300.0
    blocked_retry_delay: float = 60.0
    error_handling: Literal["block", "skip"] = "block"
    disable_after: float = 5 * 86400.0
    webhook_timeout: float = 30.0
    ack_timeout: float = 120.0
    allow_private: bool = False
    lease_ttl: float = 30.0
    attempt_retention: float = 7 * 86400.0
    secret_overlap: float = 24 * 3600.0
    retry_first: float = 0.25
    retry_max: float = 30.0


class Effective(msgspec.Struct, frozen=True):
    """A definition with every default filled in: what the runtime works from."""

    batch_size: int
    batch_timeout: float
    retry_timeout: float
    blocked_retry_delay: float
    error_handling: str
    disable_after: float
    webhook_timeout: float
    ack_timeout: float
    allow_private: bool


def effective(definition: Definition, defaults: Defaults) -> Effective:
    """``definition`` with ``defaults`` where it set nothing."""

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    hook = definition.webhook or Webhook(url="")
    ws = definition.websocket or WebSocketDelivery()
    return Effective(
        batch_size=pick(definition.batch_size, defaults.batch_size),
        batch_timeout=pick(definition.batch_timeout, defaults.batch_timeout),
        retry_timeout=pick(definition.retry_timeout, defaults.retry_timeout),
        blocked_retry_delay=pick(definition.blocked_retry_delay, defaults.blocked_retry_delay),
        error_handling=pick(definition.error_handling, defaults.error_handling),
        disable_after=pick(definition.disable_after, defaults.disable_after),
        webhook_timeout=pick(hook.timeout, defaults.webhook_timeout),
        ack_timeout=pick(ws.ack_timeout, defaults.ack_timeout),
        allow_private=pick(hook.allow_private, defaults.allow_private),
    )


def check(
    definition: Definition,
    tls_names: set[str] | frozenset[str] = frozenset(),
    policy: AddressPolicy | None = None,
    proxy_names: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Refuse (``InvalidInput``) what the wire types alone cannot: a name shaped like an
    id, a bad regular expression, a webhook setting that cannot work, settings of the
    other type. With a ``policy``, a webhook URL whose host is an IP literal it refuses
    is refused here already (host names are judged when they are resolved)."""
    if _UUID.match(definition.name):
        raise InvalidInput(f"stream name {definition.name!r} has a UUID's shape: ids use it")
    pattern = definition.filter.stream_pattern
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            problem = f"stream_pattern {pattern!r} is not a regular expression: {exc}"
            raise InvalidInput(problem) from None
    if definition.type == "webhook":
        if definition.webhook is None:
            raise InvalidInput("a webhook stream needs its webhook settings (url at least)")
        if definition.websocket is not None:
            raise InvalidInput("a webhook stream takes no websocket settings")
        _check_webhook(definition.webhook, tls_names, policy)
        proxy = definition.webhook.proxy
        if proxy is not None and proxy not in proxy_names:
            known = ", ".join(sorted(proxy_names)) or "none are configured"
            raise InvalidInput(f"proxy {proxy!r} is not in the server's config ({known})")
    else:
        if definition.webhook is not None:
            raise InvalidInput("a websocket stream takes no webhook settings")


def _check_webhook(
    hook: Webhook, tls_names: set[str] | frozenset[str], policy: AddressPolicy | None
) -> None:
    try:
        check_url(hook.url, policy or _ANY_ADDRESS)
    except BadWebhookUrl as exc:
        raise InvalidInput(f"webhook url: {exc}") from None
    except ForbiddenAddress as exc:
        opens = "allow or allow_private" if exc.private else "allow"
        raise InvalidInput(
            f"webhook url {hook.url!r}: {exc.address} is {exc.reason}, which webhooks may not"
            f" reach (a server opens it with the eventstreams setting {opens})"
        ) from None
    if hook.method.upper() not in METHODS:
        raise InvalidInput(f"webhook method {hook.method!r} is not one of {', '.join(METHODS)}")
    if hook.tls is not None and hook.tls not in tls_names:
        known = ", ".join(sorted(tls_names)) or "none are configured"
        raise InvalidInput(f"TLS setting {hook.tls!r} is not in the server's config ({known})")
    for name, value in hook.headers.items():
        if not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\x00"):
            raise InvalidInput(f"webhook header {name!r} is not a valid header line")
        if name.lower() in _OWN_HEADERS:
            raise InvalidInput(f"webhook header {name!r} is set by tidings itself")
    if hook.secret is not None:
        try:
            parse_secret(hook.secret)
        except BadSecret as exc:
            raise InvalidInput(str(exc)) from None


def parse(data: bytes | str) -> Definition:
    """A definition from its JSON (as stored); ``InvalidInput`` when it does not decode."""
    try:
        return msgspec.json.decode(data, type=Definition)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise InvalidInput(f"not an event-stream definition: {exc}") from None


def is_id(name_or_id: str) -> bool:
    """Whether ``name_or_id`` has a stream id's shape (a UUID) rather than a name's."""
    return bool(_UUID.match(name_or_id))
