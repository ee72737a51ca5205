"""Fresh stores for a benchmark run: SQLite files in a temporary directory, PostgreSQL
schemas of their own, dropped afterwards (and those of dead runs dropped first)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit


class Stores:
    """Fresh stores: SQLite files in a temp directory, PostgreSQL schemas dropped after."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.pg_url = args.pg_url
        self.sqlite_dir = args.sqlite_dir
        self.sqlite_prefix = f"tidings_bench_{name}_"
        self.schema_prefix = f"bench_{name}_"
        self._numbers = itertools.count(1)

    @contextlib.contextmanager
    def fresh(self, backend: str) -> Iterator[str]:
        if backend == "sqlite":
            path = tempfile.mkdtemp(prefix=self.sqlite_prefix, dir=self.sqlite_dir)
            try:
                yield f"sqlite:///{path}/events.db"
            finally:
                shutil.rmtree(path, ignore_errors=True)
            return
        schema = f"{self.schema_prefix}{os.getpid()}_{next(self._numbers)}"
        parts = urlsplit(self.pg_url)
        query = urlencode([*parse_qsl(parts.query), ("schema", schema)])
        try:
            yield parts._replace(query=query).geturl()
        finally:
            asyncio.run(self._sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    async def _sql(self, *statements: str) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(urlsplit(self.pg_url)._replace(query="").geturl(), timeout=10)
        try:
            return [await conn.fetch(statement) for statement in statements]
        finally:
            await conn.close()

    def check_postgres(self) -> str | None:
        """None if PostgreSQL is there (stale schemas of dead runs are dropped), else why not."""
        try:
            [rows] = asyncio.run(
                self._sql(
                    f"SELECT nspname FROM pg_namespace WHERE nspname LIKE '{self.schema_prefix}%'"
                )
            )
            for (name,) in rows:
                pid = name.removeprefix(self.schema_prefix).split("_")[0]
                if pid.isdigit() and not alive(int(pid)):
                    asyncio.run(self._sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        except Exception as exc:
            return f"PostgreSQL unavailable at {self.pg_url}: {type(exc).__name__}: {exc}"
        return None


def alive(pid: int) -> bool:
    """Whether a process ``pid`` is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
