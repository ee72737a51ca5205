"""The PostgreSQL store behind a real PgBouncer in transaction mode.

A transaction-mode pooler hands each transaction to any server connection: no
session state (prepared statements by name, LISTEN, session locks, SET) survives.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidings
from tests.conftest import IN_CI, POSTGRES_URL, pg_execute, require_postgres

pytestmark = pytest.mark.postgres

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pgbouncer() -> Iterator[str]:
    """A transaction-mode PgBouncer in front of the test server; yields its URL."""
    require_postgres()
    if not os.path.exists(PGBOUNCER):
        message = "pgbouncer is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="tidings-pgbouncer-"))
    folder.chmod(0o777)
    port = _free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
postgres = host=127.0.0.1 port=5432 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    errors = (folder / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        [PGBOUNCER, *user, str(folder / "pgbouncer.ini")], stdout=errors, stderr=errors
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (folder / "stderr.txt").read_text() + (folder / "pgbouncer.log").read_text()
                raise RuntimeError(f"pgbouncer did not start: {log}")
            time.sleep(0.05)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(10)
        errors.close()
        shutil.rmtree(folder, ignore_errors=True)


async def test_the_store_works_behind_a_transaction_mode_pooler(pgbouncer: str) -> None:
    schema = "b_" + uuid.uuid4().hex[:12]
    url = f"{pgbouncer}?schema={schema}&statement_cache_size=0"
    try:
        one, two = await tidings.connect(url), await tidings.connect(url)  # two nodes
        try:

            async def writer(store: tidings.EventStore, n: int) -> None:
                for i in range(15):
                    await store.append(
                        f"w-{n}",
                        [tidings.NewEvent("A", {"i": i})],
                        expected_version=tidings.NO_STREAM if i == 0 else i - 1,
                    )

            await asyncio.gather(*(writer(one if n % 2 else two, n) for n in range(24)))
            async with one.transaction(audit=tidings.Audit("pooled")) as tx:
                tx.append("t-1", [tidings.NewEvent("T", {})])
                tx.append("t-2", [tidings.NewEvent("T", {})])
            ids = [tidings.NewEvent("I", {"k": 1}, id=uuid.uuid4())]
            first = await two.append("idem-1", ids)
            assert await one.append("idem-1", ids) == first
            with pytest.raises(tidings.WrongExpectedVersion):
                await one.append("w-0", [tidings.NewEvent("A", {})], expected_version=3)

            events = [e async for e in two.read_all()]
            assert [e.position for e in events] == list(range(1, 24 * 15 + 4))
            assert await one.head() == len(events)
            audit = await two.audit(events[-2])
            assert audit is not None and audit.user == "pooled"
        finally:
            await one.close()
            await two.close()
    finally:
        await pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', POSTGRES_URL)
