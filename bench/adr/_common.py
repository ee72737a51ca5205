"""Shared helpers for the ADR measurement scripts in this folder.

Not a benchmark by itself: scratch-database lifecycle, the event table DDL,
payload generation, and result-line output (JSON lines) used by
driver_codec.py, global_order.py and summarize.py.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

PG_DSN_ADMIN = os.environ.get("ADR_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(db: str) -> str:
    base, _, _ = PG_DSN_ADMIN.rpartition("/")
    return f"{base}/{db}"


@asynccontextmanager
async def scratch_db(name: str) -> AsyncIterator[str]:
    """CREATE DATABASE adr_scratch_<name>, yield its DSN, DROP it afterwards."""
    db = f"adr_scratch_{name}"
    admin = await asyncpg.connect(PG_DSN_ADMIN)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {db}")
    finally:
        await admin.close()
    try:
        yield dsn_for(db)
    finally:
        admin = await asyncpg.connect(PG_DSN_ADMIN)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        finally:
            await admin.close()


# The event table shape every script uses (extra columns are added per route).
EVENTS_DDL = """
CREATE TABLE {name} (
    position bigint PRIMARY KEY{position_default},
    id       uuid NOT NULL UNIQUE,
    stream   text NOT NULL,
    version  bigint NOT NULL,
    type     text NOT NULL,
    data     jsonb NOT NULL,
    metadata jsonb NOT NULL,
    time     timestamptz NOT NULL DEFAULT now(),{extra}
    UNIQUE (stream, version)
)
"""


def events_ddl(name: str = "events", position_default: str = "", extra: str = "") -> str:
    return EVENTS_DDL.format(name=name, position_default=position_default, extra=extra)


def make_payload(rng: random.Random, n: int) -> str:
    """A ~210-byte order payload as JSON text (length measured in jsonb's output form)."""
    lines = [
        {
            "sku": f"SKU-{rng.randrange(10**5):05d}",
            "qty": rng.randrange(1, 9),
            "price": round(rng.uniform(1, 500), 2),
        }
        for _ in range(3)
    ]
    return json.dumps(
        {
            "order_id": 1_000_000 + n,
            "customer": f"customer-{rng.randrange(10**5):05d}",
            "lines": lines,
        }
    )


def make_metadata(rng: random.Random) -> str:
    return json.dumps(
        {
            "correlation_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "user": f"u-{rng.randrange(1000)}",
        }
    )


# SQL that fills `events` with n rows server-side (fast setup for read tests).
# Payload has the same shape and ~the same size as make_payload().
FILL_SQL = """
INSERT INTO events (position, id, stream, version, type, data, metadata, time)
SELECT g,
       gen_random_uuid(),
       'order-' || ((g - 1) / 10),
       ((g - 1) % 10) + 1,
       'OrderPlaced',
       jsonb_build_object(
           'order_id', 1000000 + g,
           'customer', 'customer-' || lpad((g % 100000)::text, 5, '0'),
           'lines', jsonb_build_array(
               jsonb_build_object('sku', 'SKU-' || lpad(((g * 7 + 1) % 100000)::text, 5, '0'),
                                  'qty', (g + 1) % 8 + 1, 'price', round(((g * 13 + 1) % 50000) / 100.0 + 1, 2)),
               jsonb_build_object('sku', 'SKU-' || lpad(((g * 7 + 2) % 100000)::text, 5, '0'),
                                  'qty', (g + 2) % 8 + 1, 'price', round(((g * 13 + 2) % 50000) / 100.0 + 1, 2)),
               jsonb_build_object('sku', 'SKU-' || lpad(((g * 7 + 3) % 100000)::text, 5, '0'),
                                  'qty', (g + 3) % 8 + 1, 'price', round(((g * 13 + 3) % 50000) / 100.0 + 1, 2)))),
       jsonb_build_object('correlation_id', gen_random_uuid(), 'user', 'u-' || (g % 1000)),
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => g + (g % 997) / 1000.0)
FROM generate_series(1, $1::int) g
"""


def machine_state() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(load1, 2),
        "loadavg_5m_at_start": round(load5, 2),
        "unix_time": int(time.time()),
    }


def emit(out_path: str | None, script: str, record: dict[str, Any]) -> None:
    """Print one result and append it as a JSON line to out_path (if given)."""
    record = {"script": script, **record}
    print(json.dumps(record))
    if out_path:
        with open(out_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)
