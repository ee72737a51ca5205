"""SSRF guard for webhook delivery: refuse targets that are not on the public internet.

Whoever creates a subscription chooses its URL, so unguarded the server could be made to
POST to itself, its private network or the cloud metadata service. ``GuardedResolver``
checks every address a host name resolves to (aiohttp connects to exactly those, so DNS
cannot rebind in between); ``check_url`` and ``GuardedConnector`` check IP-literal hosts,
which aiohttp never hands to a resolver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


# Explicit tables rather than is_private/is_global alone: those changed within patch
# releases (the CVE-2024-4032 fix), and they misjudge embedded IPv4 (64:ff9b::7f00:1 and
# ::127.0.0.1 are "global" on 3.11.7).
# The first network containing the address names the reason, so specific ones come first.
_V4 = _nets(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "cloud metadata"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("2001::/23", "IETF protocol assignments"),  # Teredo (2001::/32) among them
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
# Networks an operator may open with allow_private=True: internal services live there.
# Loopback and link-local (the metadata service) stay closed; only `allow` opens them.
_PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
# inet_aton also accepts trailing garbage after whitespace ("127.0.0.1 x"): only a host
# made of these characters alone is read as a number.
_NUMERIC_CHARS = frozenset(string.hexdigits + "xX.")


def _embedded(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries to the network, with the way it does."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _MAPPED:
        return low32, "IPv4-mapped"
    if address in _COMPATIBLE and int(address) > 1:  # :: and ::1 are themselves
        return low32, "IPv4-compatible"
    if address in _NAT64:
        return low32, "NAT64"
    if address in _6TO4:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF), "6to4"
    return None


def forbidden(address: IPAddress) -> str | None:
    """The reason ``address`` may not be a webhook target, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded(address)
        if inner is not None:
            why = forbidden(inner[0])
            return None if why is None else f"{why} ({inner[1]} {inner[0]})"
    for net, reason in _V4 if address.version == 4 else _V6:
        if address in net:
            return reason
    if address.version == 6 and address not in _GLOBAL_UNICAST:
        return "reserved"  # all IPv6 unicast outside 2000::/3 is unassigned
    # A registry entry newer than the tables above: refusing is the safe way to be wrong.
    return None if address.is_global else "not globally reachable"


def _private(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded(address)):
        address = inner[0]
    return any(address in net for net in _PRIVATE)


class ForbiddenAddress(Exception):
    """A webhook host is, or resolves to, an address the policy refuses."""

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        self.host, self.address, self.reason = host, address, reason
        bare = type(address)(int(address))  # without an IPv6 scope, which ip_network refuses
        hint = f"AddressPolicy(allow=(ip_network('{bare}/{bare.max_prefixlen}'),))"
        if _private(address):
            hint += " or AddressPolicy(allow_private=True)"
        verb = "is" if host == str(address) else "resolves to"
        super().__init__(
            f"webhook host {host!r} {verb} {address} ({reason}): refused; allow it with {hint}"
        )

    @property
    def private(self) -> bool:
        """Whether ``allow_private`` opens this address (``allow`` opens any)."""
        return _private(self.address)

    def __reduce__(self) -> tuple[type[ForbiddenAddress], tuple[str, IPAddress, str]]:
        return type(self), (self.host, self.address, self.reason)


class BadWebhookUrl(ValueError):
    """A webhook URL that is not an absolute http(s) URL with a host and no credentials."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses webhooks may reach: public ones, plus what is opened here."""

    allow_private: bool = False
    allow: tuple[IPNetwork, ...] = ()

    def check(self, address: IPAddress, host: str | None = None) -> None:
        """Raise ForbiddenAddress unless ``address`` (which ``host`` named) may be reached."""
        if any(address in net for net in self.allow):  # a v4 net never holds a v6 address
            return
        why = forbidden(address)
        if why is not None and not (self.allow_private and _private(address)):
            raise ForbiddenAddress(str(address) if host is None else host, address, why)


def _literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes without any DNS lookup, or None for a name."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host)
    # getaddrinfo reads inet_aton spellings as numbers without asking DNS: 2130706433,
    # 0x7f.1, 017700000001 and 127.1 are all 127.0.0.1. Judge them as what they become.
    bare = host.rstrip(".")
    if bare and set(bare) <= _NUMERIC_CHARS:
        with contextlib.suppress(OSError):
            return ipaddress.IPv4Address(socket.inet_aton(bare))
    return None


def _check_host(url: URL, policy: AddressPolicy) -> None:
    address = _literal(url.raw_host or "")  # raw_host is what aiohttp connects to
    if address is not None:
        policy.check(address, url.host)


def _bad(url: URL | str, problem: str) -> BadWebhookUrl:
    # Credentials stay out of messages, and so out of logs.
    shown = url.with_user(None) if isinstance(url, URL) and url.absolute else url
    return BadWebhookUrl(f"webhook URL '{shown}' {problem}")


def check_url(url: str | URL, policy: AddressPolicy | None = None) -> URL:
    """Validate a webhook URL and judge an IP-literal host; return the parsed URL.

    Raises BadWebhookUrl for a scheme other than http/https, a missing host or userinfo,
    and ForbiddenAddress for a literal (or numeric-spelled) host the policy refuses. A
    host name is not resolved here: GuardedResolver judges it when the request is made.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (TypeError, ValueError) as exc:
        raise _bad(url, f"does not parse: {exc}") from None
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise _bad(parsed, "must not carry userinfo")
    if parsed.scheme not in ("http", "https"):
        raise _bad(parsed, f"must be http or https, not {parsed.scheme!r}")
    if not parsed.absolute or not parsed.raw_host:
        raise _bad(parsed, "has no host")
    _check_host(parsed, policy if policy is not None else AddressPolicy())
    return parsed


class GuardedResolver(AbstractResolver):
    """Resolve with an inner resolver, then refuse the host if any address is forbidden.

    One refused address refuses the host even when others are public: whoever chose the
    URL may control its DNS, and aiohttp would try the addresses in turn. aiohttp connects
    to the very addresses returned here (no second lookup), so DNS cannot rebind between
    this check and the connection.
    """

    def __init__(
        self, policy: AddressPolicy | None = None, inner: AbstractResolver | None = None
    ) -> None:
        self.policy = policy if policy is not None else AddressPolicy()
        self._inner = inner
        self._owns_inner = inner is None  # a resolver handed in is closed by its owner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and return its entries, all of them checked."""
        if self._inner is None:
            self._inner = DefaultResolver()  # it wants a running loop, so not in __init__
        entries = await self._inner.resolve(host, port, family)
        for entry in entries:
            # ip_address raises ValueError for a name, which connect() would look up again:
            # that second lookup is the rebinding window this guard exists to close.
            self.policy.check(ipaddress.ip_address(entry["host"]), host)
        return entries

    async def close(self) -> None:
        """Close the inner resolver if this one made it."""
        if self._owns_inner and self._inner is not None:
            await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector whose every connection is checked, IP-literal hosts included."""

    def __init__(self, guard: GuardedResolver, **kwargs: Any) -> None:
        super().__init__(resolver=guard, **kwargs)
        self.guard = guard

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        """Check the request's host (each redirect hop comes here too), then connect."""
        if req.proxy is not None:
            # The proxy resolves the target itself, out of this guard's sight.
            raise _bad(req.url, "would go through a proxy, which the guard cannot check")
        _check_host(req.url, self.guard.policy)  # aiohttp skips the resolver for literals
        return await super().connect(req, traces, timeout)

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Close the connector and its guard (aiohttp closes only resolvers it made)."""
        await super().close(abort_ssl=abort_ssl)
        await self.guard.close()


def guarded_connector(
    policy: AddressPolicy | None = None, resolver: AbstractResolver | None = None, **kwargs: Any
) -> GuardedConnector:
    """A TCPConnector that resolves through GuardedResolver(policy, resolver).

    The DNS cache is off by default, so each new connection resolves afresh and is checked
    again (the cache would only hold checked answers, so turning it on is safe too).
    """
    kwargs.setdefault("use_dns_cache", False)
    return GuardedConnector(GuardedResolver(policy, resolver), **kwargs)
