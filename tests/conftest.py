"""Shared fixtures: store and notifier URLs for every backend, on real services.

PostgreSQL comes from TIDINGS_TEST_POSTGRES_URL (each test gets a schema of its own,
dropped afterwards), Redis from TIDINGS_TEST_REDIS_URL and NATS from
TIDINGS_TEST_NATS_URL. Under CI=true an unreachable service fails the run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest

import tidings
from tests.served import Served, Spares

POSTGRES_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI") == "true"
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DURABLE_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# The remote store, against a real `tidings serve` on SQLite and on PostgreSQL: for the
# suites marked `remote`.
REMOTE_BACKENDS = [
    "http-sqlite",
    pytest.param("http-postgres", marks=pytest.mark.postgres),
]
NOTIFIER_BACKENDS = [
    "memory",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]


def with_option(url: str, key: str, value: object) -> str:
    """Add a query option to a URL."""
    return f"{url}{'&' if urlsplit(url).query else '?'}{key}={value}"


_postgres_checked: list[str | None] = []


async def pg_execute(sql: str, url: str = POSTGRES_URL) -> None:
    """Run one statement on the test server."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when the test PostgreSQL cannot be reached."""
    if not _postgres_checked:
        try:
            asyncio.run(pg_execute("SELECT 1"))
            _postgres_checked.append(None)
        except Exception as exc:
            _postgres_checked.append(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc!r}")
    problem = _postgres_checked[0]
    if problem is not None:
        if IN_CI:
            pytest.fail(problem + " (CI=true: a missing service is a failure)")
        pytest.skip(problem)


_reachable: dict[str, str | None] = {}


def _tcp_problem(name: str, url: str) -> str | None:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError as exc:
        return f"{name} unreachable at {url}: {exc!r}"
    return None


def require_service(name: str) -> str:
    """The URL of ``redis`` or ``nats``; skip (under CI=true, fail) when unreachable."""
    url = {"redis": REDIS_URL, "nats": NATS_URL}[name]
    if name not in _reachable:
        _reachable[name] = _tcp_problem(name, url)
    problem = _reachable[name]
    if problem is not None:
        if IN_CI:
            pytest.fail(problem + " (CI=true: a missing service is a failure)")
        pytest.skip(problem)
    return url


@pytest.fixture
def redis_url() -> str:
    """The test Redis server's URL."""
    return require_service("redis")


@pytest.fixture
def nats_url() -> str:
    """The test NATS server's URL."""
    return require_service("nats")


@pytest.fixture
def notifier_url(request: pytest.FixtureRequest) -> str:
    """A notifier URL for the backend the test is parametrized with."""
    backend = request.param
    if backend == "memory":
        return f"memory://t{uuid.uuid4().hex[:12]}"
    if backend == "postgres":
        require_postgres()
        return POSTGRES_URL
    return require_service(backend)


@pytest.fixture
def channel() -> str:
    """A channel name no other test (or concurrent run) uses."""
    return "t." + uuid.uuid4().hex[:16]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL with a fresh schema, dropped after the test."""
    require_postgres()
    schema = "t_" + uuid.uuid4().hex[:16]
    yield with_option(POSTGRES_URL, "schema", schema)
    asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A SQLite store URL for a file in the test's temporary directory."""
    yield f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A store URL for the backend the test is parametrized with.

    A test that takes ``refusing_store`` (it only checks that a store refuses something
    and writes nothing) gets, on PostgreSQL and on the remote backends, a store shared
    by every such test of its module instead of a fresh one: it holds what a fresh one
    would while each of them writes nothing, and one that wrongly writes fails on its
    own check that nothing was written. Starting a server per test was most of the
    remote tests' time, and a fresh schema most of the PostgreSQL ones'."""
    backend = request.param
    if backend != "memory" and backend != "sqlite" and "refusing_store" in request.fixturenames:
        yield request.getfixturevalue("shared_stores").url(backend, request.module.__name__)
    elif backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield request.getfixturevalue("sqlite_url")
    elif backend == "postgres":
        yield request.getfixturevalue("pg_url")
    else:
        if backend == "http-postgres":
            require_postgres()
        server = request.getfixturevalue("spare_servers").take(backend)
        try:
            yield server.url
        finally:
            server.stop()
            if backend == "http-postgres":
                schema = dict(parse_qsl(urlsplit(server.store).query))["schema"]
                asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(scope="session")
def spare_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spares]:
    """Real ``tidings serve`` processes on empty stores, started ahead of the tests."""

    def make_store(backend: str) -> str:
        if backend == "http-sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('served') / 'events.db'}"
        return with_option(POSTGRES_URL, "schema", "t_" + uuid.uuid4().hex[:16])

    spares = Spares(make_store)
    yield spares
    spares.close()


class SharedStores:
    """One store per test module and backend (PostgreSQL, and a server on each remote
    backend) for the tests that take ``refusing_store``; made at first use, removed at
    the session's end."""

    def __init__(self, spares: Spares) -> None:
        self._spares = spares
        self._urls: dict[tuple[str, str], str] = {}
        self._servers: list[Served] = []

    def url(self, backend: str, module: str) -> str:
        if (backend, module) not in self._urls:
            if backend != "http-sqlite":
                require_postgres()
            if backend == "postgres":
                url = with_option(POSTGRES_URL, "schema", "t_" + uuid.uuid4().hex[:16])
            else:
                server = self._spares.take(backend)
                self._servers.append(server)
                url = server.url
            self._urls[backend, module] = url
        return self._urls[backend, module]

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        for server in self._servers:
            if server.store.startswith("postgresql:"):
                schema = dict(parse_qsl(urlsplit(server.store).query))["schema"]
                asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        for (backend, _), url in self._urls.items():
            if backend == "postgres":
                schema = dict(parse_qsl(urlsplit(url).query))["schema"]
                asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(scope="session")
def shared_stores(spare_servers: Spares) -> Iterator[SharedStores]:
    """The stores ``refusing_store`` tests share (see ``store_url``)."""
    shared = SharedStores(spare_servers)
    yield shared
    shared.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[tidings.EventStore]:
    """An open store on the parametrized backend."""
    s = await tidings.connect(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def refusing_store(store: tidings.EventStore) -> tidings.EventStore:
    """The open store of a test that only checks refusals, which write nothing: on
    PostgreSQL and the remote backends one shared by all such tests (see ``store_url``).
    Such a test ends by checking that nothing was written."""
    return store


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests that use ``store_url`` or ``notifier_url`` on every backend of their kind."""
    if "notifier_url" in metafunc.fixturenames:
        metafunc.parametrize("notifier_url", NOTIFIER_BACKENDS, indirect=True)
    if "store_url" in metafunc.fixturenames:
        durable = metafunc.definition.get_closest_marker("durable") is not None
        backends = list(DURABLE_BACKENDS if durable else BACKENDS)
        if metafunc.definition.get_closest_marker("remote") is not None:
            backends += REMOTE_BACKENDS
        metafunc.parametrize("store_url", backends, indirect=True)
