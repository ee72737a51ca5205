"""``RemoteStore``: the EventStore protocol over a tidings server's HTTP API (aiohttp).

It validates input as the local backends do (nothing bad is sent), maps every error
response back to the exception a local backend raises, and follows the log live over
the server's WebSocket (or Server-Sent Events), resuming by itself from the last
position it yielded. Watches and channels are in ``tidings.client.gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from tidings.client import gateway
from tidings.client.sse import SSEParser
from tidings.codec import PreparedAppend
from tidings.errors import StoreUnavailable, TidingsError
from tidings.events import (
    AppendResult,
    AuditRecord,
    Filter,
    RecordedEvent,
    StreamInfo,
    expected_from_code,
)
from tidings.hub import HubEvent
from tidings.store import redact
from tidings.store.base import StoreFront, check_limit, check_page_size, check_position
from tidings.store.planner import Group
from tidings.subscriptions.checkpoints import SubscriptionInfo
from tidings.views.watch import Change
from tidings.wire import (
    CheckpointInfo,
    ErrorBody,
    Head,
    LogPage,
    Published,
    StreamPage,
    StreamsPage,
    StreamVersion,
    TransactionResult,
    encoder,
    error_from_body,
    expected_to_wire,
)
from tidings.wire_subscriptions import AckResult, SubscriptionsPage

T = TypeVar("T")
STORE_HEADER = "Tidings-Store"
"""The header naming the store that positions belong to (the server's identity)."""
log = logging.getLogger("tidings.client")
_RETRY_FIRST = 0.05
_RETRY_MAX = 2.0
_LONG_POLL = 25.0  # seconds one long poll of the head may wait at the server


class WireEvent(msgspec.Struct, omit_defaults=True):
    """A prepared event as a request body carries it (data and metadata as stored JSON)."""

    type: str
    data: msgspec.Raw
    metadata: msgspec.Raw
    id: str | None = None


class _Append(msgspec.Struct, omit_defaults=True):
    events: list[WireEvent]
    expected_version: int | str | None = None


class WireAppend(msgspec.Struct, omit_defaults=True):
    """One stream's part of a transaction as a request body carries it."""

    stream: str
    events: list[WireEvent]
    expected_version: int | str | None = None


class WireAudit(msgspec.Struct):
    """A transaction's audit as a request body carries it."""

    user: str
    extra: dict[str, Any]


class _Checkpoint(msgspec.Struct):
    name: str
    position: int


class _Transaction(msgspec.Struct, omit_defaults=True):
    appends: list[WireAppend]
    audit: WireAudit | None = None
    checkpoint: _Checkpoint | None = None


def _events(append: PreparedAppend, every_id: bool = False) -> list[WireEvent]:
    return [
        WireEvent(
            e.type,
            msgspec.Raw(e.data),
            msgspec.Raw(e.metadata),
            str(e.id) if every_id or e.id_given else None,
        )
        for e in append.events
    ]


def wire_appends(appends: Iterable[PreparedAppend], every_id: bool = False) -> list[WireAppend]:
    """Prepared appends as a request body carries them; with ``every_id``, each event with
    its id, given or made (a satellite's events keep their ids on the server)."""
    return [WireAppend(a.stream, _events(a, every_id), _expected(a)) for a in appends]


def _expected(append: PreparedAppend) -> int | str | None:
    code = append.expected
    return None if code == -1 else expected_to_wire(expected_from_code(code))


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decode(data: bytes, type_: type[T]) -> T:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    value: T = decoder.decode(data)
    return value


class RemoteStore(StoreFront):
    """An event store on a tidings server, spoken to over HTTP: ``http://host:port``."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        page_size: int = 1000,
        max_event_bytes: int | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            from tidings.errors import ConfigurationError

            raise ConfigurationError(f"unknown option(s) {sorted(unknown)} for {redact(url)}")
        options: dict[str, Any] = {"page_size": page_size}
        if max_event_bytes is not None:
            options["max_event_bytes"] = max_event_bytes
        super().__init__(url, **options)
        self.base = url.split("?", 1)[0].rstrip("/")
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ws: bool | None = None  # whether the server has /ws (None: not known yet)

    def _identity(self) -> str:
        return f"remote:{self.base}"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session, opened on first use."""
        self._check_open()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            )
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        body: bytes | None = None,
        missing: T | None = None,
    ) -> T:
        """One request; the decoded answer, ``missing`` on 404 when given, else the error."""
        headers = self._request_headers(
            {"Content-Type": "application/json"} if body is not None else {}
        )
        session = self.session
        self._calls += 1
        self._idle.clear()
        try:
            async with session.request(
                method, self.base + path, params=params, data=body, headers=headers
            ) as response:
                data = await response.read()
                status = response.status
                self._note_identity(response)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()
        if status < 300:
            return _decode(data, type_)
        if status == 404 and missing is not None:
            return missing
        raise self._error(status, data)

    async def request(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        body: bytes | None = None,
    ) -> T:
        """One call to a route outside the store protocol (a satellite's ``/sync``): the
        answer decoded as ``type_``, or the tidings error the server's answer stands for
        (``StoreUnavailable`` when it cannot be reached)."""
        return await self._call(method, path, type_, params=params, body=body)

    def _request_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """A request's headers, naming the store this one's positions belong to (once
        known): a server whose store is another answers 409 ``store_changed``."""
        if self.identity is not None:
            headers[STORE_HEADER] = self.identity
        return headers

    def _note_identity(self, response: aiohttp.ClientResponse) -> None:
        """Learn the server's store from its first answer."""
        if self.identity is None:
            self.identity = response.headers.get(STORE_HEADER)

    def _error(self, status: int, data: bytes) -> TidingsError:
        try:
            body = _decode(data, ErrorBody)
        except msgspec.MsgspecError:
            body = ErrorBody("http_error", f"HTTP {status}: {data[:200]!r}")
        return error_from_body(status, body, redact(self.url))

    async def _commit(self, group: Group) -> list[AppendResult]:
        appends = group.appends
        if len(appends) == 1 and group.audit is None and group.checkpoint is None:
            [one] = appends
            body = encoder.encode(_Append(_events(one), _expected(one)))
            path = f"/streams/{quote(one.stream, safe='')}/events"
            return [await self._call("POST", path, AppendResult, body=body)]
        audit = None if group.audit is None else WireAudit(group.audit.user, group.audit.extra)
        parts = wire_appends(appends)
        moved = None if group.checkpoint is None else _Checkpoint(*group.checkpoint)
        body = encoder.encode(_Transaction(parts, audit, moved))
        result = await self._call("POST", "/transactions", TransactionResult, body=body)
        return result.results

    async def _checkpoint(self, name: str) -> int | None:
        path = f"/checkpoints/{quote(name, safe='')}"
        return (await self._call("GET", path, CheckpointInfo)).position

    async def _stream_page(
        self, stream: str, version: int, size: int, backwards: bool
    ) -> list[RecordedEvent]:
        params = {
            "from_version": version,
            "limit": size,
            "direction": "backward" if backwards else "forward",
        }
        path = f"/streams/{quote(stream, safe='')}/events"
        page = await self._call("GET", path, StreamPage, params=params)
        return page.events

    async def _log_page(
        self, after: int, filter: Filter | None, size: int, raw: bool = False
    ) -> list[RecordedEvent]:
        params = [("from_position", after), ("limit", size), *_filter_params(filter)]
        page = await self._call("GET", "/events", LogPage, params=params)
        return page.events

    async def _streams_page(self, prefix: str | None, after: str, size: int) -> list[StreamInfo]:
        params: dict[str, Any] = {"limit": size}
        if prefix:
            params["prefix"] = prefix
        if after:
            params["after"] = after
        page = await self._call("GET", "/streams", StreamsPage, params=params)
        return page.streams

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        self._check_open()
        path = f"/streams/{quote(stream, safe='')}"
        found = await self._call("GET", path, StreamVersion, missing=StreamVersion(stream, None))
        return found.version

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        return (await self._call("GET", "/head", Head)).head

    async def wait_for(self, position: int, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Wait until the log reaches ``position`` (long polls of the server's head);
        return the head. ``TimeoutError`` when ``timeout`` seconds pass first."""
        self._check_open()
        check_position(position, "position")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = _LONG_POLL if deadline is None else min(_LONG_POLL, deadline - loop.time())
            params = {"at_least": position, "wait": max(0.0, left)}
            head = (await self._call("GET", "/head", Head, params=params)).head
            if head >= position:
                return head
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"the log did not reach position {position} in {timeout} s")

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        self._check_open()
        position = event.position if isinstance(event, RecordedEvent) else event
        check_position(position, "position")
        if position == 0:
            return None
        try:
            return await self._call("GET", f"/events/{position}/audit", AuditRecord)
        except LookupError:
            return None

    async def subscriptions(self) -> list[SubscriptionInfo]:
        """The server's pull subscriptions the caller may see: checkpoint, head, lag, state."""
        page = await self._call("GET", "/subscriptions", SubscriptionsPage)
        return [
            SubscriptionInfo(
                s.name,
                s.checkpoint,
                s.head,
                s.lag,
                s.state,
                s.last_error,
                s.updated,
                s.parked,
                s.members,
                s.definition.partitions if s.grouped else 0,
            )
            for s in page.subscriptions
        ]

    async def reset_subscription(self, name: str, position: int = 0) -> None:
        """Move a pull subscription's checkpoint on the server to ``position``."""
        check_position(position, "position")
        path = f"/subscriptions/{quote(name, safe='')}/reset"
        await self._call("POST", path, AckResult, body=encoder.encode({"position": position}))

    async def read_all_pages(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
        page_size: int | None = None,
        raw: bool = False,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """``read_all`` a page at a time; with ``follow=True``, live over the server's
        WebSocket (acked batches; over SSE from a server without one), resuming by
        itself after a cut. (``raw`` is taken and ignored: events arrive decoded.)"""
        if not follow:
            async for page in super().read_all_pages(
                from_position, filter, limit, False, page_size, raw
            ):
                yield page
            return
        self._check_open()
        types = None if raw else self.types  # raw reads pass on what is stored
        if types is not None:
            filter = types.read_filter(filter)
        position = check_position(from_position, "from_position")
        remaining = check_limit(limit)
        size = self.page_size if page_size is None else check_page_size(page_size)
        retry = _RETRY_FIRST
        while remaining is None or remaining > 0:
            try:
                # Each (re)connection first asks which store serves: positions of another
                # one (the server's store restored meanwhile) raise StoreChanged.
                await self._call("GET", "/head", Head)
                pages = (
                    self._live_pages(position, filter, size)
                    if self._ws is False
                    else gateway.follow_pages(self, position, filter, size)
                )
                async for page in pages:
                    retry = _RETRY_FIRST
                    if types is not None:
                        page = types.read(page)
                    if remaining is not None:
                        page = page[:remaining]
                        remaining -= len(page)
                    position = page[-1].position
                    yield page
                    if remaining == 0:
                        return
            except StoreUnavailable as exc:
                self._check_open()
                log.warning("live read lost the server (%s); resuming in %.2f s", exc, retry)
            self._check_open()
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX)

    async def _live_pages(
        self, after: int, filter: Filter | None, size: int
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Pages from one SSE connection, until it ends or breaks (StoreUnavailable)."""
        params: list[tuple[str, Any]] = [("from_position", after)]
        params += _filter_params(filter, pattern=True)
        headers = self._request_headers(
            {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=60)
        parser = SSEParser()
        try:
            async with self.session.get(
                self.base + "/events/live", params=params, headers=headers, timeout=timeout
            ) as response:
                self._note_identity(response)
                if response.status >= 300:
                    raise self._error(response.status, await response.read())
                async for chunk in response.content.iter_any():
                    page = [
                        _decode(data.encode(), RecordedEvent)
                        for kind, data in parser.feed(chunk)
                        if kind == "message" and data
                    ]
                    while page:
                        yield page[:size]
                        page = page[size:]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}") from exc

    def watch(self, view: str, keys: Iterable[str] | None = None) -> AsyncIterator[Change]:
        """A server view's ``Change``s for ``keys`` (None: every key): each existing key's
        value, then every change, stacked per key while the reader is slow, as
        ``View.watch`` gives them; kept alive and resumed after cuts (see
        ``tidings.client.gateway.watch``)."""
        return gateway.watch(self, view, None if keys is None else list(keys))

    def listen(self, channel: str) -> AsyncIterator[HubEvent]:
        """A channel's notifications (and the server's notices, ``topic`` None), from
        every node, at most once (see ``tidings.client.gateway.listen``)."""
        return gateway.listen(self, channel)

    async def publish(self, channel: str, key: tuple[int, ...] = (), value: Any = None) -> None:
        """Notify every listener of ``channel``, on every node (``POST /channels/{channel}``)."""
        body = encoder.encode({"key": list(key), "value": value})
        await self._call("POST", f"/channels/{quote(channel, safe='')}", Published, body=body)

    async def close(self) -> None:
        """Let requests already made finish (appends included), then close the session."""
        if self._closed:
            return
        self._closed = True
        await self._watch.close()
        if self._session is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._idle.wait()
            await self._session.close()


def _filter_params(filter: Filter | None, pattern: bool = False) -> list[tuple[str, str]]:
    if filter is None:
        return []
    params = [("category", c) for c in filter.categories or ()]
    params += [("type", t) for t in filter.types or ()]
    if filter.stream_prefix:
        params.append(("stream_prefix", filter.stream_prefix))
    if pattern and filter.stream_pattern:
        params.append(("stream_pattern", filter.stream_pattern))
    return params
