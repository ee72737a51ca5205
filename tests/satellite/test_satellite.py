"""A satellite against a real server: replication, local writes online and offline,
conflicts, restarts; the invariants of docs/satellites.md checked as it goes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import tidings
from tests.satellite.conftest import Remote
from tidings import NO_STREAM, NewEvent
from tidings.errors import ConfigurationError, Offline, WrongExpectedVersion
from tidings.satellite import PENDING, Conflict, LocalAppend, Satellite

# What happens on the satellite's side only: one server backend is enough.
SERVER_SIDE_DOES_NOT_MATTER = pytest.mark.parametrize("server_store", ["sqlite"], indirect=True)


def sold(n: int) -> NewEvent:
    return NewEvent("Sold", {"n": n})


def satellite(remote: Remote, path: Path, name: str = "till", **options: Any) -> Satellite:
    return Satellite(
        f"sqlite:///{path / (name + '.db')}",
        remote.url,
        ["sale"],
        satellite_id=name,
        timeout=2.0,
        **options,
    )


async def confirmed_equal(sat: Satellite, remote: Remote) -> None:
    """I5: the satellite's confirmed events of its categories are the server's."""
    server = [e async for e in remote.store.read_all(filter=tidings.Filter(["sale"]))]
    local = [e async for e in sat.read_all()]
    assert [(e.position, e.id, e.stream, e.version, e.type, e.data) for e in local] == [
        (e.position, e.id, e.stream, e.version, e.type, e.data) for e in server
    ]
    assert [e.time for e in local] == [e.time for e in server]


async def test_a_satellite_replicates_its_categories_with_the_servers_positions(
    remote: Remote, tmp_path: Path
) -> None:
    await remote.store.append("sale-1", [sold(1), sold(2)])
    await remote.store.append("stock-1", [NewEvent("Counted")])
    await remote.store.append("sale-2", [sold(3)])
    async with satellite(remote, tmp_path) as sat:
        status = await sat.sync(timeout=10)
        assert status.online and status.pending == 0
        await confirmed_equal(sat, remote)
        assert status.position == await remote.store.head()
        assert sat.identity == remote.store.identity
        await remote.store.append("sale-1", [sold(4)])
        await sat.wait_for(await remote.store.head(), timeout=10)  # live: the long poll
        await confirmed_equal(sat, remote)


async def test_an_online_write_goes_through_the_server_and_returns_its_result(
    remote: Remote, tmp_path: Path
) -> None:
    async with satellite(remote, tmp_path) as sat:
        await sat.sync(timeout=10)
        result = await sat.append("sale-1", [sold(1)], expected_version=NO_STREAM)
        assert result.position > 0
        assert await remote.store.stream_version("sale-1") == 0
        with pytest.raises(WrongExpectedVersion) as caught:
            await sat.append("sale-1", [sold(2)], expected_version=5)
        assert caught.value.actual == 0  # checked locally, on the replica and its overlay
        await sat.sync(timeout=10)
        [event] = [e async for e in sat.read_stream("sale-1")]
        assert PENDING not in event.metadata and event.position == result.position
        assert await sat.conflicts() == []


async def test_offline_writes_are_pending_on_top_and_land_once_when_the_network_heals(
    remote: Remote, tmp_path: Path
) -> None:
    await remote.store.append("sale-1", [sold(0)])
    async with satellite(remote, tmp_path) as sat:
        await sat.sync(timeout=10)
        remote.offline()
        with pytest.raises(tidings.StoreUnavailable):
            await sat.sync(timeout=10)
        first = await sat.append("sale-1", [sold(1)], expected_version=0)
        second = await sat.append("sale-1", [sold(2)], expected_version=1)
        assert (first.position, first.last_version, second.last_version) == (0, 1, 2)
        events = [e async for e in sat.read_stream("sale-1")]
        assert [e.data["n"] for e in events] == [0, 1, 2]
        assert [e.metadata.get(PENDING) for e in events] == [None, 1, 2]
        assert await sat.stream_version("sale-1") == 2
        status = await sat.status()
        assert not status.online and status.pending == 2 and status.last_error
        ids = [e.id for e in events]
        remote.online()
        await sat.sync(timeout=10)
        assert [e.id async for e in remote.store.read_stream("sale-1")] == ids
        after = [e async for e in sat.read_stream("sale-1")]
        assert [e.id for e in after] == ids and all(PENDING not in e.metadata for e in after)
        assert (await sat.status()).pending == 0
        await confirmed_equal(sat, remote)
        await sat.sync(timeout=10)  # a second sync changes nothing
        assert await remote.store.stream_version("sale-1") == 2


@SERVER_SIDE_DOES_NOT_MATTER
async def test_an_authority_refuses_an_offline_write_at_once_and_nothing_is_recorded(
    remote: Remote, tmp_path: Path
) -> None:
    def only_sales(appends: list[LocalAppend]) -> bool:
        return all(e.type == "Sold" for a in appends for e in a.events)

    async with satellite(remote, tmp_path, authority=only_sales) as sat:
        await sat.sync(timeout=10)
        remote.offline()
        with pytest.raises(tidings.StoreUnavailable):
            await sat.sync(timeout=10)
        with pytest.raises(Offline) as caught:
            await sat.append("sale-1", [NewEvent("Refunded")])
        assert caught.value.pending is None
        await sat.append("sale-1", [sold(1)])
        assert (await sat.status()).pending == 1
        remote.online()
        await sat.sync(timeout=10)
        assert [e.type async for e in remote.store.read_stream("sale-1")] == ["Sold"]


async def test_two_satellites_editing_one_stream_offline_one_wins_the_other_redecides(
    remote: Remote, tmp_path: Path
) -> None:
    await remote.store.append("sale-7", [sold(0)])
    heard: list[Conflict] = []
    async with (
        satellite(remote, tmp_path, "a") as a,
        satellite(remote, tmp_path, "b", on_conflict=heard.append) as b,
    ):
        await a.sync(timeout=10)
        await b.sync(timeout=10)
        remote.offline()
        for sat in (a, b):
            with pytest.raises(tidings.StoreUnavailable):
                await sat.sync(timeout=10)
        await a.append("sale-7", [sold(1)], expected_version=0)
        await b.append("sale-7", [NewEvent("Sold", {"n": 2})], expected_version=0)
        remote.online()
        await a.sync(timeout=10)
        await b.sync(timeout=10)
        [conflict] = await b.conflicts()
        assert heard == [conflict]
        assert (conflict.stream, conflict.verdict.expected, conflict.actual) == ("sale-7", 0, 1)
        assert conflict.appends[0].events[0].data == {"n": 2}
        assert [e.data["n"] async for e in b.read_stream("sale-7")] == [0, 1]  # b's is gone

        async def again(sat: Satellite) -> tidings.AppendResult:
            version = await sat.stream_version("sale-7")
            assert version is not None
            return await sat.append("sale-7", [NewEvent("Sold", {"n": 2})], version)

        result = await b.redecide(conflict, again)
        assert result.last_version == 2 and result.position > 0
        assert await b.conflicts() == []
        assert [e.data["n"] async for e in remote.store.read_stream("sale-7")] == [0, 1, 2]


async def test_pending_transactions_survive_a_restart_and_keep_their_order(
    remote: Remote, tmp_path: Path
) -> None:
    remote.offline()
    sat = satellite(remote, tmp_path)
    async with sat:
        for n in range(5):
            await sat.append(f"sale-{n % 2}", [sold(n)])
    remote.online()
    async with satellite(remote, tmp_path) as again:
        status = await again.sync(timeout=10)
        assert status.pending == 0
    order = [e.data["n"] async for e in remote.store.read_all(filter=tidings.Filter(["sale"]))]
    assert order == [0, 1, 2, 3, 4]  # I3


@SERVER_SIDE_DOES_NOT_MATTER
async def test_a_state_view_runs_on_the_satellite_unchanged(remote: Remote, tmp_path: Path) -> None:
    await remote.store.append("sale-1", [NewEvent("new", {"sku": "tea", "qty": 1})])
    async with (
        satellite(remote, tmp_path) as sat,
        tidings.View(sat, "sales", category="sale") as view,
    ):
        status = await sat.sync(timeout=10)
        assert await view.get(["1"], at_least=status.position) == {"1": {"sku": "tea", "qty": 1}}
        result = await remote.store.append("sale-1", [NewEvent("mod", {"qty": 2})])
        await sat.wait_for(result.position, timeout=10)
        assert await view.get(["1"], at_least=result.position) == {"1": {"sku": "tea", "qty": 2}}
    async with satellite(remote, tmp_path) as sat:  # the view's rows live in the file
        rows = await sat.replica.read(
            lambda c: c.execute("SELECT count(*) FROM tidings_views").fetchone()
        )
        assert rows[0] >= 1


@SERVER_SIDE_DOES_NOT_MATTER
async def test_metrics_show_a_satellites_standing(remote: Remote, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from tidings.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with satellite(remote, tmp_path) as sat:
        metrics.watch_satellite(sat)
        await remote.store.append("sale-1", [sold(1)])
        await sat.sync(timeout=10)
        remote.offline()
        with pytest.raises(tidings.StoreUnavailable):
            await sat.sync(timeout=10)
        await sat.append("sale-1", [sold(2)])
        with pytest.raises(tidings.StoreUnavailable):
            await sat.sync(timeout=10)
        text = generate_latest(registry).decode()
    head = await remote.store.head()
    assert 'tidings_satellite_online{satellite="till"} 0.0' in text
    assert 'tidings_satellite_pending{satellite="till"} 1.0' in text
    assert 'tidings_satellite_conflicts{satellite="till"} 0.0' in text
    assert f'tidings_satellite_position{{satellite="till"}} {float(head)}' in text
    assert 'tidings_satellite_last_sync_seconds{satellite="till"}' in text


@SERVER_SIDE_DOES_NOT_MATTER
async def test_a_file_is_one_satellites_and_one_set_of_categories(
    remote: Remote, tmp_path: Path
) -> None:
    async with satellite(remote, tmp_path):
        pass
    with pytest.raises(ConfigurationError):
        await Satellite(
            f"sqlite:///{tmp_path / 'till.db'}", remote.url, ["sale"], satellite_id="other"
        ).open()
    with pytest.raises(ConfigurationError):
        await Satellite(
            f"sqlite:///{tmp_path / 'till.db'}", remote.url, ["stock"], satellite_id="till"
        ).open()
    with pytest.raises(ConfigurationError):
        Satellite("memory://", remote.url, ["sale"])


@SERVER_SIDE_DOES_NOT_MATTER
async def test_subscriptions_run_on_the_confirmed_log(remote: Remote, tmp_path: Path) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def handle(events: list[tidings.RecordedEvent]) -> None:
        seen.extend(e.data["n"] for e in events)
        if len(seen) >= 3:
            done.set()

    async with satellite(remote, tmp_path) as sat:
        for n in range(3):
            await remote.store.append("sale-1", [sold(n)])
        async with sat.subscribe("tally", handle):
            await asyncio.wait_for(done.wait(), 10)
    assert seen == [0, 1, 2]
