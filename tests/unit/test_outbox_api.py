"""The outbox's checks that need no database: driver detection, options, relay settings."""

from __future__ import annotations

import sqlite3
import types
from typing import Any

import pytest

from tidings.errors import ConfigurationError, InvalidInput
from tidings.outbox import Outbox, Relay, driver_of


def fake_connection(module: str, name: str) -> Any:
    """An instance of a class that claims to come from ``module`` (no driver imported)."""
    cls = types.new_class(name)
    cls.__module__ = module
    return cls()


@pytest.mark.parametrize(
    ("module", "name", "driver"),
    [
        ("asyncpg.connection", "Connection", "asyncpg"),
        ("asyncpg.pool", "PoolConnectionProxy", "asyncpg"),
        ("psycopg.connection_async", "AsyncConnection", "psycopg_async"),
        ("psycopg.connection", "Connection", "psycopg"),
    ],
)
def test_drivers_are_told_apart_by_class_and_module(module: str, name: str, driver: str) -> None:
    assert driver_of(fake_connection(module, name)) == driver


def test_subclasses_of_driver_connections_are_recognised() -> None:
    base = type(fake_connection("asyncpg.connection", "Connection"))
    sub = type("AppConnection", (base,), {"__module__": "myapp.db"})
    assert driver_of(sub()) == "asyncpg"
    assert driver_of(sqlite3.connect(":memory:")) == "sqlite3"


@pytest.mark.parametrize(
    "conn", [object(), fake_connection("psycopg2.extensions", "connection"), "dsn"]
)
def test_other_objects_are_not_connections(conn: object) -> None:
    with pytest.raises(InvalidInput, match="connection"):
        driver_of(conn)


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("mysql://x/y", {}, "scheme"),
        ("sqlite:///x.db?synchronous=full", {}, "unknown"),
        ("sqlite:///x.db", {"schema": "s"}, "unknown"),
        ("sqlite://host/x.db", {}, "path"),
        ("sqlite:///x.db?busy_timeout_ms=soon", {}, "integer"),
        ("postgresql://u@h/db", {"schema": ""}, "schema"),
        ("postgresql://u@h/db", {"wat": 1}, "unknown"),
    ],
)
async def test_bad_urls_and_options_are_configuration_errors(
    url: str, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        await Outbox.open(url, **options)


async def test_a_bad_default_channel_is_refused(tmp_path: Any) -> None:
    with pytest.raises(InvalidInput):
        await Outbox.open(f"sqlite:///{tmp_path / 'o.db'}", channel="not a channel")


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"poll_interval": 0},
        {"backoff": -1},
        {"publish_timeout": True},
        {"concurrency": 0},
    ],
)
async def test_bad_relay_settings_are_invalid_input(tmp_path: Any, options: dict[str, Any]) -> None:
    outbox = await Outbox.open(f"sqlite:///{tmp_path / 'o.db'}")

    class Sink:
        async def publish(self, channel: str, payload: bytes) -> None: ...

    with pytest.raises(InvalidInput):
        outbox.relay(Sink(), **options)
    with pytest.raises(InvalidInput, match="publish"):
        Relay(outbox, object())  # type: ignore[arg-type]
    await outbox.close()
