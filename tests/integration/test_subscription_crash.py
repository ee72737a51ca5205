"""Subscriptions across SIGKILL: nothing lost, only the unfinished batch seen twice, and
handler writes made in the checkpoint's transaction happen exactly once."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

import tidings
from tests.conftest import POSTGRES_URL

pytestmark = [pytest.mark.slow, pytest.mark.durable]

SCRIPT = Path(__file__).with_name("crash_subscriber.py")
TOTAL = 1500
BATCH = 50
KILLS = 3


async def preload(url: str) -> None:
    store = await tidings.connect(url)
    async with store:
        for start in range(0, TOTAL, 100):
            await store.append(
                f"order-{start}", [tidings.NewEvent("Placed", {"n": n}) for n in range(100)]
            )


async def run_until_killed(url: str, mode: str, out: Path | str) -> bool:
    """Start a subscriber; kill it after a random stretch. True if it finished first."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        url,
        mode,
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 30)
    try:
        await asyncio.wait_for(proc.wait(), random.uniform(0.2, 0.6))
    except TimeoutError:
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:  # it finished just as the wait ran out: not killed
            await proc.wait()
        else:
            await proc.wait()
            return False
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    return True


async def run_to_the_end(url: str, mode: str, out: Path | str) -> None:
    finished = [await run_until_killed(url, mode, out) for _ in range(KILLS)]
    assert not all(finished), "no run was killed mid-way: the test proved nothing"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), url, mode, str(out), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()


async def test_a_killed_subscriber_loses_nothing_and_repeats_only_unfinished_batches(
    store_url: str, tmp_path: Path
) -> None:
    await preload(store_url)
    out = tmp_path / "handled.txt"
    await run_to_the_end(store_url, "plain", out)
    seen = [int(line) for line in out.read_text().split()]
    assert sorted(set(seen)) == list(range(1, TOTAL + 1))  # nothing lost
    assert len(seen) - TOTAL <= KILLS * BATCH  # repeats: at most one batch per kill
    # every run delivered in log order
    runs, current = [], [seen[0]]
    for p in seen[1:]:
        if p <= current[-1]:
            runs.append(current)
            current = []
        current.append(p)
    runs.append(current)
    assert all(run == sorted(run) for run in runs)


async def test_handler_writes_in_the_checkpoint_transaction_happen_exactly_once(
    store_url: str, tmp_path: Path
) -> None:
    await preload(store_url)
    if store_url.startswith("sqlite"):
        path = urlsplit(store_url).path
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE handled (position INTEGER NOT NULL)")
        conn.close()
    else:
        schema = parse_qs(urlsplit(store_url).query)["schema"][0]
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'CREATE TABLE "{schema}".handled (position bigint NOT NULL)')
        finally:
            await conn.close()
    table = "handled" if store_url.startswith("sqlite") else f'"{schema}".handled'
    await run_to_the_end(store_url, "tx", table)
    if store_url.startswith("sqlite"):
        conn2 = sqlite3.connect(urlsplit(store_url).path)
        rows = [r[0] for r in conn2.execute("SELECT position FROM handled ORDER BY position")]
        conn2.close()
    else:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows = [
                r[0]
                for r in await conn.fetch(f'SELECT position FROM "{schema}".handled ORDER BY 1')
            ]
        finally:
            await conn.close()
    assert rows == list(range(1, TOTAL + 1))  # each exactly once
