"""SQL kept as files: versioned migrations and named queries, per dialect.

Queries are written with a ``{schema}`` placeholder where the dialect has schemas;
``load_queries`` fills it with a quoted identifier once, at connect time.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import NamedTuple, TypeVar

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")
T = TypeVar("T")


class Migration(NamedTuple):
    """One versioned schema change."""

    version: int
    name: str
    sql: str


def _files(dialect: str) -> resources.abc.Traversable:
    return resources.files("tidings.sql").joinpath(dialect)


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _fill(sql: str, schema: str | None) -> str:
    return sql if schema is None else sql.replace("{schema}", quote_ident(schema))


def migrations(dialect: str, schema: str | None = None) -> list[Migration]:
    """The dialect's migrations, in version order."""
    found = []
    for entry in _files(dialect).iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(
                Migration(int(match[1]), match[2], _fill(entry.read_text("utf-8"), schema))
            )
    return sorted(found)


def declared_schema(dialect: str, schema: str | None = None) -> str:
    """The schema as it should stand after every migration (``schema.sql``)."""
    return _fill(_files(dialect).joinpath("schema.sql").read_text("utf-8"), schema)


def load_queries(
    dialect: str, schema: str | None = None, file: str = "queries.sql"
) -> dict[str, str]:
    """The dialect's named queries from ``file`` (``-- name: x`` headers)."""
    text = _fill(_files(dialect).joinpath(file).read_text("utf-8"), schema)
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def split_statements(script: str) -> list[str]:
    """Split a script on semicolons at line ends, keeping dollar-quoted bodies whole."""
    statements, current, in_dollar = [], [], False
    for line in script.splitlines():
        if line.count("$$") % 2:
            in_dollar = not in_dollar
        current.append(line)
        if not in_dollar and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip()
            if statement.strip(";").strip() and not all(
                ln.strip().startswith("--") or not ln.strip() for ln in current
            ):
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest and not all(ln.strip().startswith("--") or not ln.strip() for ln in current):
        statements.append(rest)
    return statements


def row_counts(rows: int, most: int) -> list[int]:
    """How to split ``rows`` rows into multi-row statements of few distinct sizes.

    Statements of ``most`` rows, then the rest as powers of two (37 rows: 32, 4, 1). A
    connection keeps every statement it prepared, one per text, and a 100-row insert
    holds ~50 KiB: with a size per batch, the cache grows for as long as new batch
    sizes turn up. With these, there are at most ``most.bit_length() + 1`` sizes.
    """
    rest = rows % most
    powers = [1 << b for b in reversed(range(rest.bit_length())) if rest >> b & 1]
    return [most] * (rows // most) + powers


def padded(values: list[T]) -> list[T]:
    """``values`` repeated at the end up to a power of two (for ``IN (?, ...)``: one
    statement text for each of a few sizes, as ``row_counts`` does for inserts)."""
    size = 1 << max(len(values) - 1, 0).bit_length()
    return values + values[-1:] * (size - len(values)) if values else values
