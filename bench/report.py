"""Collecting measurements, and reporting them as a table and as JSON.

A :class:`Row` is one backend and workload, holding each library's :class:`Series` of
runs. The table shows medians with the min-max range, the tidings/eventsourcing ratio
of medians, and whether the tidings median reaches the workload's goal.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workloads import LIBRARIES, Measurement


@dataclass
class Series:
    """One library's runs of one workload on one backend, or the error that stopped them."""

    target_events: int
    runs: list[Measurement] = field(default_factory=list)
    error: str | None = None

    @property
    def rates(self) -> list[float]:
        return [m.rate for m in self.runs]

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.runs else None

    @property
    def capped(self) -> bool:
        """Whether some run stopped at the time cap before writing every event."""
        return any(m.events < self.target_events for m in self.runs)

    def cell(self) -> str:
        if self.error is not None:
            return "error"
        if not self.runs:
            return "-"
        text = f"{self.median:,.0f} ({min(self.rates):,.0f}-{max(self.rates):,.0f})"
        return text + (" *" if self.capped else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "target_events": self.target_events,
            "median": _round(self.median, 1),
            "min": _round(min(self.rates), 1) if self.runs else None,
            "max": _round(max(self.rates), 1) if self.runs else None,
            "runs": [
                {"events": m.events, "seconds": round(m.seconds, 4), "rate": round(m.rate, 1)}
                for m in self.runs
            ],
            "capped": self.capped,
            "what": self.runs[0].note if self.runs else None,
            "error": self.error,
        }


@dataclass
class Row:
    """A backend and workload, with the goal for tidings and each library's series."""

    backend: str
    workload: str
    goal: float
    series: dict[str, Series] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        ours, theirs = (self._median(lib) for lib in LIBRARIES)
        return ours / theirs if ours and theirs else None

    @property
    def passed(self) -> bool | None:
        ours = self._median("tidings")
        return None if ours is None else ours >= self.goal

    def _median(self, library: str) -> float | None:
        series = self.series.get(library)
        return series.median if series else None

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "workload": self.workload,
            "goal": self.goal,
            "ratio": _round(self.ratio, 3),
            "passed": self.passed,
            **{lib: s.to_json() for lib, s in self.series.items()},
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def render_table(rows: list[Row]) -> str:
    """The results as a fixed-width text table, with footnotes."""
    header = (
        "backend",
        "workload",
        "tidings ev/s",
        "eventsourcing ev/s",
        "ratio",
        "goal",
        "",
    )
    lines = [header]
    for row in rows:
        ratio = f"{row.ratio:.1f}x" if row.ratio is not None else "-"
        mark = {True: "pass", False: "MISS", None: "-"}[row.passed]
        lines.append(
            (
                row.backend,
                row.workload,
                row.series["tidings"].cell() if "tidings" in row.series else "-",
                row.series["eventsourcing"].cell() if "eventsourcing" in row.series else "-",
                ratio,
                f">= {row.goal:,.0f}",
                mark,
            )
        )
    text = fixed_width(lines)
    text.append("")
    text.append("ev/s: median over runs (min-max). ratio: tidings median / eventsourcing median.")
    text.append("goal: for tidings' median. * = a run stopped at the time cap (--max-seconds).")

    notes = _notes(rows)
    if notes:
        text.append("")
        text.extend(notes)
    return "\n".join(text)


def fixed_width(lines: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells, the header first, as left-aligned columns with a rule under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return text


def machine_info(load: float) -> dict[str, Any]:
    """The machine, for the JSON output; ``load`` is the load average at the start."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": load,
    }


def _notes(rows: list[Row]) -> list[str]:
    """What each library's measurement did, once each, then the errors, once each."""
    what: dict[str, None] = {}
    errors: dict[str, list[str]] = {}
    for row in rows:
        for library, series in row.series.items():
            if series.error is not None:
                message = series.error.strip().splitlines()[0]
                errors.setdefault(message, []).append(f"{row.backend} {row.workload} {library}")
            elif series.runs:
                what[f"{library} {row.workload}: {series.runs[0].note}"] = None
    return [*what, *(f"ERROR ({', '.join(where)}): {msg}" for msg, where in errors.items())]


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**meta, "results": [row.to_json() for row in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")


def med(values: list[float]) -> float | None:
    """The median of a series, NaN and None left out (None when nothing is left)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def cell(values: list[float], digits: int = 0) -> str:
    """``median (min-max)`` of a series."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    m = statistics.median(values)
    if len(values) == 1:
        return f"{m:,.{digits}f}"
    return f"{m:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def versions(pg_version: str | None) -> dict[str, str | None]:
    """The versions a result file records: tidings, eventsourcing, SQLite, PostgreSQL."""
    import sqlite3
    from importlib import metadata

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "tidings": version("tidings"),
        "eventsourcing": version("eventsourcing"),
        "sqlite": sqlite3.sqlite_version,
        "postgres": pg_version,
    }


def load_line(
    before: tuple[float, ...] | list[float],
    after: tuple[float, ...] | list[float],
    starts: list[float],
    tail: str = "",
) -> str:
    """The footer line of a table: the load average before and after, and at the starts."""
    line = (
        f"(load average 1/5/15 min: {'/'.join(f'{x:.2f}' for x in before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in after)} after"
    )
    if starts:
        line += f"; 1-min at the measurements' starts {min(starts):.2f}-{max(starts):.2f}"
    return line + f"; {os.cpu_count()} CPUs{tail})"


def machine(before: Any, after: Any, **extra: Any) -> dict[str, Any]:
    """The machine a result file records, with the load average before and after."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": before,
        "load_average_after": after,
        **extra,
    }
