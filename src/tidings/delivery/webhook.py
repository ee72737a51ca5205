"""Posting a batch to a webhook: the body, the Standard Webhooks signature, one attempt,
and what the answer means. Connections go through the SSRF guard.

- 2xx: delivered. 3xx: a failure (redirects are not followed: the guard would have to
  judge a target the stream's creator never named).
- 410 Gone: the receiver wants no more; the stream stops with the reason.
- 429, 502, 503, 504: throttled; ``Retry-After`` (seconds or an HTTP date) is honoured.
- anything else, a timeout, a refused address or a broken connection: a failure.

Through a named proxy (the server's ``proxies``) the guard cannot see the address the
target resolves to: the proxy resolves it. The target's host is still refused when it
is a forbidden IP literal, and the rest is left to the proxy, which is the operator's
egress control (docs/adr/0019).
"""

from __future__ import annotations

import email.utils
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tidings.delivery.definitions import TlsConfig, Webhook
from tidings.delivery.signing import SigningKeys, headers
from tidings.delivery.ssrf import AddressPolicy, ForbiddenAddress, check_url, guarded_connector
from tidings.errors import ConfigurationError
from tidings.events import RecordedEvent

RESPONSE_KEPT = 4096
"""Bytes of a receiver's answer kept with the attempt."""
THROTTLED = frozenset({429, 502, 503, 504})


class Batch(msgspec.Struct):
    """The body of one delivery: ``{"stream", "batch_id", "batch_number", "events"}``."""

    stream: str
    batch_id: str
    batch_number: int
    events: list[RecordedEvent]


_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to. ``outcome`` is ``delivered``, ``failed``,
    ``throttled`` or ``gone``; ``retry_after`` the seconds a throttling receiver asked
    for (None when it did not say); ``consumer`` the WebSocket consumers it went to."""

    outcome: str
    status_code: int | None
    duration_ms: float
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None
    consumer: str | None = None

    @property
    def delivered(self) -> bool:
        """Whether the receiver took the batch."""
        return self.outcome == "delivered"


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, at.timestamp() - (time.time() if now is None else now))


def classify(status: int) -> str:
    """The outcome a status code stands for."""
    if 200 <= status < 300:
        return "delivered"
    if status == 410:
        return "gone"
    if status in THROTTLED:
        return "throttled"
    return "failed"


class WebhookSender:
    """Posts batches; one aiohttp session per address policy and TLS setting, each on a
    guarded connector. Close it when done."""

    def __init__(
        self, tls: dict[str, TlsConfig] | None = None, proxies: dict[str, str] | None = None
    ) -> None:
        self._tls = dict(tls or {})
        self._proxies = dict(proxies or {})
        self._sessions: dict[tuple[Any, ...], aiohttp.ClientSession] = {}

    def _session(
        self, policy: AddressPolicy, tls: str | None, proxied: bool
    ) -> aiohttp.ClientSession:
        key = (policy, tls, proxied)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector: aiohttp.TCPConnector
            if proxied:  # the proxy resolves the target: see the module's docstring
                connector = aiohttp.TCPConnector(ssl=self._ssl(tls), limit=0)
            else:
                connector = guarded_connector(policy, ssl=self._ssl(tls), limit=0)
            session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
            self._sessions[key] = session
        return session

    def _ssl(self, name: str | None) -> ssl.SSLContext | bool:
        if name is None:
            return True
        try:
            config = self._tls[name]
        except KeyError:
            raise ConfigurationError(f"TLS setting {name!r} is not configured") from None
        context = ssl.create_default_context(cafile=config.ca_file)
        if config.cert_file is not None:
            context.load_cert_chain(config.cert_file, config.key_file)
        if not config.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def send(
        self,
        hook: Webhook,
        keys: SigningKeys,
        batch: Batch,
        policy: AddressPolicy,
        timeout: float,  # noqa: ASYNC109
    ) -> Outcome:
        """One attempt at posting ``batch`` to ``hook``."""
        body = _encode(batch)
        sent = {
            **hook.headers,
            **headers(keys, batch.batch_id, body),
            "content-type": "application/json",
        }
        started = time.perf_counter()
        try:
            proxy = None
            if hook.proxy is not None:
                check_url(hook.url, policy)  # a forbidden literal host, even through a proxy
                proxy = self._proxies.get(hook.proxy)
                if proxy is None:
                    raise ConfigurationError(f"proxy {hook.proxy!r} is not configured")
            session = self._session(policy, hook.tls, proxy is not None)
            async with session.request(
                hook.method.upper(),
                hook.url,
                data=body,
                headers=sent,
                allow_redirects=False,
                proxy=proxy,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as answer:
                kept = await _head_of(answer)
                status = answer.status
                wait = (
                    retry_after(answer.headers.get("retry-after"))
                    if answer.status in THROTTLED
                    else None
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ForbiddenAddress) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, ForbiddenAddress) else exc
            return Outcome("failed", None, _ms(started), _describe(cause))
        except (ValueError, ConfigurationError) as exc:  # a URL the guard refused, bad TLS
            return Outcome("failed", None, _ms(started), _describe(exc))
        outcome = classify(status)
        error = None if outcome == "delivered" else f"HTTP {status}"
        return Outcome(outcome, status, _ms(started), error, kept, wait)

    async def close(self) -> None:
        """Close every session."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def _head_of(answer: aiohttp.ClientResponse) -> str | None:
    """Up to ``RESPONSE_KEPT`` bytes of the answer, as text."""
    data = await answer.content.read(RESPONSE_KEPT)
    if not data:
        return None
    return data.decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = "timed out"
    return f"{type(exc).__name__}: {text}"[:RESPONSE_KEPT]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
