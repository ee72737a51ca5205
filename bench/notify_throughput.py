"""Notifier throughput: messages/s delivered to one subscriber, tidings beside each raw client.

Usage::

    python bench/notify_throughput.py [--runs N] [--quick] [--messages N]
                                      [--backend postgres|redis|nats|memory ...]
                                      [--pg-url URL] [--redis-url URL] [--nats-url URL]
                                      [--output PATH]

For every backend and publishing pattern, one process publishes ``--messages``
100-byte payloads on a fresh channel and a subscriber on its own connection counts
them; a run is timed from the first publish until the last message is delivered.
``sequential`` awaits each publish; ``concurrent`` keeps up to 100 in flight, the
raw clients in their own best way (an asyncpg pool of 8, Redis pipelines of 100,
NATS buffered publishes). Raw and tidings take turns run by run; the table shows
median messages/s (min-max), tidings/raw and whether tidings reaches 80 % of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))  # benchmark the working tree's tidings

from notify_sides import PG_POOL, RAW, WIDTH, run_tidings  # noqa: E402
from report import fixed_width, machine_info  # noqa: E402

BACKENDS = ("postgres", "redis", "nats", "memory")
PATTERNS = ("sequential", "concurrent")
URLS = {
    "postgres": os.environ.get(
        "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
    "memory": "memory://bench-notify",
}
MESSAGES, QUICK_MESSAGES = 20_000, 2_000
PAYLOAD_BYTES = 100
GOAL = 0.8  # tidings should deliver at least 80 % of the raw client's rate
RUN_TIMEOUT = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (default 3)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES:,} messages")
    parser.add_argument("--messages", type=int, help=f"messages per run (default {MESSAGES:,})")
    parser.add_argument("--backend", choices=BACKENDS, action="append", help="repeatable")
    for name in ("pg", "redis", "nats"):
        backend = "postgres" if name == "pg" else name
        parser.add_argument(
            f"--{name}-url", default=URLS[backend], help=f"(default {URLS[backend]})"
        )
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "notify_throughput.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.messages = args.messages or (QUICK_MESSAGES if args.quick else MESSAGES)
    args.backend = args.backend or list(BACKENDS)
    return args


def make_payloads(n: int) -> list[bytes]:
    """``n`` distinct ASCII payloads of 100 bytes (PostgreSQL folds identical ones)."""
    return [f"{i:08d}".ljust(PAYLOAD_BYTES, ".").encode() for i in range(n)]


# --- collecting and reporting -----------------------------------------------------------


@dataclass
class Cell:
    """One library's runs of one backend and pattern: (delivered, seconds) each."""

    sent: int
    runs: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def rates(self) -> list[float]:
        return [n / s if s > 0 else 0.0 for n, s in self.runs]

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.runs and not self.error else None

    @property
    def lost(self) -> int:
        return sum(self.sent - n for n, _ in self.runs)

    def text(self) -> str:
        if self.error:
            return "error"
        if not self.runs:
            return "-"
        return f"{self.median:,.0f} ({min(self.rates):,.0f}-{max(self.rates):,.0f})"

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "runs": [
                {"delivered": n, "seconds": round(s, 4), "rate": round(n / s, 1)}
                for n, s in self.runs
            ],
            "lost": self.lost,
            "error": self.error,
        }


async def measure(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Cell]]]:
    urls = {**URLS, "postgres": args.pg_url, "redis": args.redis_url, "nats": args.nats_url}
    msgs = make_payloads(args.messages)
    channels = itertools.count(1)
    rows = []
    for backend, pattern in itertools.product(args.backend, PATTERNS):
        libs = ["tidings"] if backend == "memory" else ["raw", "tidings"]
        cells = {lib: Cell(len(msgs)) for lib in libs}
        rows.append((backend, pattern, cells))
        for run in range(args.runs):
            for lib in libs if run % 2 == 0 else libs[::-1]:
                cell = cells[lib]
                if cell.error:
                    continue
                runner = run_tidings if lib == "tidings" else RAW[backend]
                ch = f"bench_tp_{os.getpid()}_{next(channels)}"
                try:
                    async with asyncio.timeout(RUN_TIMEOUT):
                        delivered, seconds = await runner(urls[backend], ch, msgs, pattern)
                except Exception as exc:
                    cell.error = f"{type(exc).__name__}: {exc}".strip()
                    status = f"ERROR {cell.error}"
                else:
                    cell.runs.append((delivered, seconds))
                    lost = len(msgs) - delivered
                    status = f"{delivered / seconds:,.0f} msg/s" + (
                        (lost and f"  LOST {lost}") or ""
                    )
                print(
                    f"{backend:8} {pattern:10} {lib:7} run {run + 1}/{args.runs}  {status}",
                    flush=True,
                )
    return rows


def render(rows: list[tuple[str, str, dict[str, Cell]]]) -> str:
    header = ("backend", "pattern", "raw msg/s", "tidings msg/s", "ratio", "goal", "", "lost")
    lines = [header]
    errors = []
    for backend, pattern, cells in rows:
        raw, ours = cells.get("raw"), cells["tidings"]
        ratio = ours.median / raw.median if raw and raw.median and ours.median else None
        mark = "-" if ratio is None else ("pass" if ratio >= GOAL else "MISS")
        lost = " / ".join(str(c.lost) for c in cells.values())
        lines.append(
            (
                backend,
                pattern,
                raw.text() if raw else "-",
                ours.text(),
                f"{ratio:.2f}" if ratio is not None else "-",
                f">= {GOAL:.2f} raw" if raw else "-",
                mark,
                lost,
            )
        )
        errors += [
            f"ERROR ({backend} {pattern} {lib}): {c.error}" for lib, c in cells.items() if c.error
        ]
    text = fixed_width(lines)
    text += [
        "",
        "msg/s: messages delivered to one subscriber per second, median over runs (min-max).",
        "ratio: tidings median / raw median; goal: tidings >= 80 % of the raw client.",
        "lost: messages published but never delivered, summed over runs (raw / tidings).",
        *errors,
    ]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    print(
        f"notifier throughput: {args.messages:,} messages of {PAYLOAD_BYTES} bytes per run",
        flush=True,
    )
    rows = asyncio.run(measure(args))
    print()
    print(render(rows))
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load),
        "options": {
            "runs": args.runs,
            "messages": args.messages,
            "payload_bytes": PAYLOAD_BYTES,
            "in_flight": WIDTH,
            "pg_pool": PG_POOL,
            "backends": args.backend,
        },
        "total_seconds": round(time.perf_counter() - began, 1),
        "results": [
            {"backend": b, "pattern": p, **{lib: c.to_json() for lib, c in cells.items()}}
            for b, p, cells in rows
        ],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    failed = any(c.error for _, _, cells in rows for c in cells.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
