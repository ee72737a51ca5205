"""A backup or a restore SIGKILLed midway leaves no half store that looks whole: no backup
file (a ``.partial`` at most, refused as incomplete), and a restore target still empty."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidings
from tests.conftest import POSTGRES_URL, pg_execute, require_postgres, with_option
from tidings import BackupError, NewEvent

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("backup_child.py")
EVENTS = 50_000  # ten pages of PAGE_ROWS: the kill at the first report is midway
rates: dict[str, float] = {}


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A SQLite store of 50,000 events and a backup of it."""
    where = tmp_path_factory.mktemp("big")
    url = f"sqlite:///{where / 'big.db'}?synchronous=normal"

    async def make() -> None:
        async with await tidings.connect(url) as store:
            for n in range(EVENTS // 1000):
                events = [NewEvent("Big", {"n": n, "i": i, "pad": "p" * 60}) for i in range(1000)]
                await store.append(f"big-{n % 50}", events)
            started = time.monotonic()
            await store.backup(where / "big.backup")
            rates["backup"] = EVENTS / (time.monotonic() - started)

    asyncio.run(make())
    return url, where / "big.backup"


def killed_midway(*args: str) -> None:
    """Run the child, SIGKILL it at its first progress report, and wait for it."""
    child = subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("progress"), line
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL  # killed, not finished


def test_a_killed_backup_leaves_no_backup_file(big_store: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = big_store
    file = tmp_path / "killed.backup"
    killed_midway("backup", url, str(file))
    assert not file.exists()
    with pytest.raises(BackupError) as caught:
        asyncio.run(tidings.restore(file, f"sqlite:///{tmp_path / 'target.db'}"))
    expected = "incomplete" if Path(f"{file}.partial").exists() else "missing"
    assert caught.value.problem == expected
    assert not (tmp_path / "target.db").exists()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'target.db'}"
        return
    require_postgres()
    schema = "t_" + uuid.uuid4().hex[:16]
    yield with_option(POSTGRES_URL, "schema", schema)
    asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_a_killed_restore_leaves_the_target_empty(
    big_store: tuple[str, Path], target_url: str
) -> None:
    _, backup = big_store
    killed_midway("restore", str(backup), target_url)

    async def check() -> None:
        async with await tidings.connect(target_url) as store:
            assert await store.head() == 0
            assert [e async for e in store.read_all(limit=1)] == []
        started = time.monotonic()
        restored = await tidings.restore(backup, target_url)  # empty: no force needed
        rates["restore " + target_url.split(":")[0]] = EVENTS / (time.monotonic() - started)
        assert restored.position == EVENTS
        async with await tidings.connect(target_url) as store:
            assert await store.head() == EVENTS

    asyncio.run(check())
    print(f"\nbackup and restore rates, events/s: {rates}")
