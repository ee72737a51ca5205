"""A real ``tidings serve`` for satellite tests, reached through a TCP proxy that can
take it offline, on a SQLite file or on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import tidings
from tests.integration.tcp_proxy import TcpProxy
from tests.served import Served, served


class Remote:
    """The server as a satellite reaches it (through ``proxy``), and a direct client."""

    def __init__(self, served_: Served, proxy: TcpProxy, store: tidings.EventStore) -> None:
        self.served = served_
        self.proxy = proxy
        self.store = store  # the server's store over HTTP, not through the proxy
        self.url = f"http://127.0.0.1:{proxy.port}"

    def offline(self) -> None:
        """The server looks down: connections reset, new ones refused."""
        self.proxy.refuse(True)
        self.proxy.cut()

    def online(self) -> None:
        """The network heals."""
        self.proxy.refuse(False)


@pytest.fixture(params=["sqlite", "postgres"])
def server_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's store URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def served_server(server_store: str) -> Iterator[Served]:
    """``tidings serve`` on the server store."""
    with served(server_store) as server:
        yield server


@pytest.fixture
async def remote(served_server: Served) -> AsyncIterator[Remote]:
    """The server behind a proxy, with a direct client."""
    target = urlsplit(served_server.url)
    assert target.port is not None
    async with TcpProxy("127.0.0.1", target.port) as proxy:
        store = await tidings.connect(served_server.url)
        try:
            yield Remote(served_server, proxy, store)
        finally:
            await store.close()
