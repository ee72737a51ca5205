"""The webhook SSRF guard: which addresses are refused, and that refused ones see no request."""

from __future__ import annotations

import asyncio
import pickle
import socket
from collections.abc import AsyncIterator
from ipaddress import ip_address, ip_network
from types import TracebackType

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from tidings.delivery.ssrf import (
    AddressPolicy,
    BadWebhookUrl,
    ForbiddenAddress,
    GuardedResolver,
    check_url,
    forbidden,
    guarded_connector,
)

LOOPBACK_ONLY = AddressPolicy(allow=(ip_network("127.0.0.1/32"),))
# Spellings of 127.0.0.1 that are not IP literals to yarl or ipaddress, but are to the C
# library: getaddrinfo reads them with inet_aton rules and never asks DNS.
NUMERIC_SPELLINGS = ["2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001", "0177.0.0.1"]
SPELLINGS = ["127.0.0.1", "localhost", *NUMERIC_SPELLINGS]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "this network"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("fc00::1", "unique-local"),
        ("fd12::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("2001::1", "IETF protocol assignments"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("4000::1", "reserved"),
        ("::ffff:127.0.0.1", "loopback (IPv4-mapped 127.0.0.1)"),
        ("::ffff:10.0.0.1", "private (IPv4-mapped 10.0.0.1)"),
        ("::ffff:169.254.169.254", "cloud metadata (IPv4-mapped 169.254.169.254)"),
        ("::127.0.0.1", "loopback (IPv4-compatible 127.0.0.1)"),
        ("64:ff9b::7f00:1", "loopback (NAT64 127.0.0.1)"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata (NAT64 169.254.169.254)"),
        ("2002:7f00:1::1", "loopback (6to4 127.0.0.1)"),
        ("2002:c0a8:101::1", "private (6to4 192.168.1.1)"),
    ],
)
def test_non_public_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    assert forbidden(ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",  # the embedded address is what gets reached, and it is public
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden(ip_address(address)) is None
    AddressPolicy().check(ip_address(address))


def test_allow_private_opens_private_networks_but_not_loopback_or_metadata() -> None:
    policy = AddressPolicy(allow_private=True)
    for address in ("10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd12::1"):
        policy.check(ip_address(address))
    policy.check(ip_address("::ffff:10.0.0.1"))
    for address in ("127.0.0.1", "::1", "169.254.169.254", "fe80::1", "0.0.0.0"):
        with pytest.raises(ForbiddenAddress):
            policy.check(ip_address(address))


def test_the_allowlist_overrides_the_refusal_and_nothing_else() -> None:
    LOOPBACK_ONLY.check(ip_address("127.0.0.1"))
    for address in ("127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.1"):
        with pytest.raises(ForbiddenAddress):
            LOOPBACK_ONLY.check(ip_address(address))
    AddressPolicy(allow=(ip_network("169.254.169.254/32"),)).check(ip_address("169.254.169.254"))


def test_a_refusal_names_host_address_reason_and_the_way_to_allow_it() -> None:
    with pytest.raises(ForbiddenAddress) as caught:
        AddressPolicy().check(ip_address("127.0.0.1"), "hooks.example")
    error = caught.value
    assert (error.host, error.address, error.reason) == (
        "hooks.example",
        ip_address("127.0.0.1"),
        "loopback",
    )
    assert str(error) == (
        "webhook host 'hooks.example' resolves to 127.0.0.1 (loopback): refused; "
        "allow it with AddressPolicy(allow=(ip_network('127.0.0.1/32'),))"
    )
    again = pickle.loads(pickle.dumps(error))
    assert (again.host, again.address, again.reason, str(again)) == (
        error.host,
        error.address,
        error.reason,
        str(error),
    )
    with pytest.raises(ForbiddenAddress, match=r"is 10\.0\.0\.1 .*allow_private=True"):
        AddressPolicy().check(ip_address("10.0.0.1"))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/x",
        "file:///etc/passwd",
        "gopher://hooks.example/",
        "http://user:pw@hooks.example/",
        "http://user@hooks.example/",
        "http://:pw@hooks.example/",
        "http:///no-host",
        "/relative/only",
        "hooks.example/x",
    ],
)
def test_check_url_refuses_what_is_not_a_plain_http_url(url: str) -> None:
    with pytest.raises(BadWebhookUrl) as caught:
        check_url(url)
    assert isinstance(caught.value, ValueError)
    assert "pw" not in str(caught.value)  # credentials stay out of the message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "https://[64:ff9b::7f00:1]:8443/x",
        "http://127.0.0.1./",
        *(f"http://{spelling}:8080/" for spelling in NUMERIC_SPELLINGS),
    ],
)
def test_check_url_refuses_literal_and_numeric_hosts_itself(url: str) -> None:
    with pytest.raises(ForbiddenAddress) as caught:
        check_url(url)
    assert caught.value.reason.startswith("loopback")


def test_check_url_returns_the_url_for_public_literals_and_for_names() -> None:
    assert check_url("https://8.8.8.8/hook") == URL("https://8.8.8.8/hook")
    assert check_url(URL("https://hooks.example/a?b=1")) == URL("https://hooks.example/a?b=1")
    # A name is not resolved by check_url: the resolver judges it at connect time.
    assert check_url("http://localhost:8080/") == URL("http://localhost:8080/")
    assert check_url("http://127.0.0.1/", LOOPBACK_ONLY) == URL("http://127.0.0.1/")


@pytest.mark.parametrize("spelling", ["localhost", *NUMERIC_SPELLINGS])
async def test_getaddrinfo_reads_each_spelling_as_loopback_and_the_resolver_refuses_it(
    spelling: str,
) -> None:
    plain = ThreadedResolver()
    assert {entry["host"] for entry in await plain.resolve(spelling, 80)} == {"127.0.0.1"}
    with pytest.raises(ForbiddenAddress) as caught:
        await GuardedResolver(AddressPolicy(), plain).resolve(spelling, 80)
    assert (caught.value.host, caught.value.reason) == (spelling, "loopback")


class Receiver:
    """A real aiohttp server that counts the TCP connections it accepts."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, 0
        self.connections = 0
        self.requests: list[str] = []
        self.location: str | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path} {await request.text()}")
        if self.location is not None:
            return web.Response(status=302, headers={"Location": self.location})
        return web.Response(text="ok")

    def _accept(self) -> asyncio.BaseProtocol:
        self.connections += 1
        assert self._runner.server is not None
        return self._runner.server()

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._accept, self.host, 0)
        except OSError as exc:
            await self._runner.cleanup()
            pytest.skip(f"cannot listen on {self.host}: {exc}")
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self._runner.cleanup()
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_refused_host_is_never_connected_to(receiver: Receiver, spelling: str) -> None:
    async with aiohttp.ClientSession(connector=guarded_connector(AddressPolicy())) as session:
        with pytest.raises(ForbiddenAddress) as caught:
            await session.post(f"http://{spelling}:{receiver.port}/hook", data=b"{}")
    assert caught.value.address == ip_address("127.0.0.1")
    assert (receiver.connections, receiver.requests) == (0, [])


async def test_an_allowlisted_address_is_reached(receiver: Receiver) -> None:
    async with (
        aiohttp.ClientSession(connector=guarded_connector(LOOPBACK_ONLY)) as session,
        session.post(f"http://127.0.0.1:{receiver.port}/hook", data=b"{}") as response,
    ):
        assert (response.status, await response.text()) == (200, "ok")
    assert (receiver.connections, receiver.requests) == (1, ["POST /hook {}"])


async def test_a_redirect_is_returned_not_followed(receiver: Receiver) -> None:
    async with Receiver() as other:
        receiver.location = f"http://127.0.0.1:{other.port}/"
        async with (
            aiohttp.ClientSession(connector=guarded_connector(LOOPBACK_ONLY)) as session,
            session.post(
                f"http://127.0.0.1:{receiver.port}/hook", data=b"{}", allow_redirects=False
            ) as response,
        ):
            assert response.status == 302
            assert response.headers["Location"] == receiver.location
        assert other.connections == 0
    assert receiver.requests == ["POST /hook {}"]


@pytest.mark.parametrize("target", ["127.0.0.2", "0x7f.0.0.2"])  # literal; via the resolver
async def test_a_followed_redirect_to_a_refused_host_is_refused(
    receiver: Receiver, target: str
) -> None:
    async with Receiver("127.0.0.2") as other:
        receiver.location = f"http://{target}:{other.port}/"
        async with aiohttp.ClientSession(connector=guarded_connector(LOOPBACK_ONLY)) as session:
            with pytest.raises(ForbiddenAddress) as caught:
                await session.post(f"http://127.0.0.1:{receiver.port}/hook", data=b"{}")
        assert caught.value.address == ip_address("127.0.0.2")
        assert other.connections == 0
    assert receiver.requests == ["POST /hook {}"]


class StubResolver(AbstractResolver):
    """Answers each call with the next list of addresses (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        hosts = self.answers[min(self.calls, len(self.answers)) - 1]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in hosts
        ]

    async def close(self) -> None:
        pass


async def test_each_resolution_is_checked_again() -> None:
    stub = StubResolver(["93.184.216.34"], ["127.0.0.1"])
    guard = GuardedResolver(AddressPolicy(), stub)
    first = await guard.resolve("rebind.example", 443)
    assert [entry["host"] for entry in first] == ["93.184.216.34"]
    with pytest.raises(ForbiddenAddress, match=r"'rebind\.example' resolves to 127\.0\.0\.1"):
        await guard.resolve("rebind.example", 443)


async def test_one_forbidden_address_among_public_ones_refuses_the_host(
    receiver: Receiver,
) -> None:
    stub = StubResolver(["93.184.216.34", "127.0.0.1"])
    with pytest.raises(ForbiddenAddress):
        await GuardedResolver(AddressPolicy(), stub).resolve("mixed.example", 80)
    # Through a session too: refused before any connection, so nothing reaches the internet.
    connector = guarded_connector(AddressPolicy(), stub)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(ForbiddenAddress):
            await session.post(f"http://mixed.example:{receiver.port}/", data=b"{}")
    assert receiver.connections == 0


async def test_the_connection_goes_to_the_checked_address_with_no_second_lookup(
    receiver: Receiver,
) -> None:
    # The name cannot be resolved by real DNS (.invalid), and the stub would answer a
    # forbidden address to any second lookup: the request arriving, after one call,
    # shows aiohttp connected to exactly the address the guard had checked.
    stub = StubResolver(["127.0.0.1"], ["127.0.0.2"])
    connector = guarded_connector(LOOPBACK_ONLY, stub, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"http://hook.invalid:{receiver.port}/a", data=b"1") as response:
            assert response.status == 200
        assert stub.calls == 1
        # The next connection resolves again (no DNS cache) and that answer is checked.
        with pytest.raises(ForbiddenAddress, match=r"resolves to 127\.0\.0\.2"):
            await session.post(f"http://hook.invalid:{receiver.port}/b", data=b"2")
        assert stub.calls == 2
    assert (receiver.connections, receiver.requests) == (1, ["POST /a 1"])


async def test_a_resolver_answering_a_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        await GuardedResolver(AddressPolicy(), StubResolver(["evil.example"])).resolve("x", 80)


async def test_a_proxy_is_refused_since_it_would_resolve_the_host_itself(
    receiver: Receiver,
) -> None:
    proxy = f"http://127.0.0.1:{receiver.port}"
    async with aiohttp.ClientSession(connector=guarded_connector(LOOPBACK_ONLY)) as session:
        with pytest.raises(BadWebhookUrl, match="proxy"):
            await session.post("http://hooks.example/", data=b"{}", proxy=proxy)
    assert receiver.connections == 0


async def test_closing_the_connector_closes_the_resolver_it_made_only() -> None:
    closed: list[str] = []

    class Closing(StubResolver):
        async def close(self) -> None:
            closed.append("inner")

    inner = Closing(["8.8.8.8"])
    await guarded_connector(AddressPolicy(), inner).close()
    assert closed == []  # the caller handed it in, so the caller closes it
    # Without an inner resolver the guard makes a DefaultResolver on first use, and owns it.
    guard = GuardedResolver(LOOPBACK_ONLY)
    assert [entry["host"] for entry in await guard.resolve("localhost", 80)] == ["127.0.0.1"]
    await guard.close()
