"""Summarise the JSON-lines output of driver_codec.py / global_order.py as Markdown tables.

Each configuration's figures are given as ``median [min-max]`` over the runs found in the
file (one run = one invocation of the measuring script).

    .venv/bin/python bench/adr/summarize.py bench/adr/results/driver_codec.jsonl bench/adr/results/global_order.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

# part -> (identity fields, metric fields)
LAYOUT: dict[str, tuple[list[str], list[str]]] = {
    "a-write": (["conns", "driver"], ["rows_per_s"]),
    "b-rows": (["codec", "driver"], ["events_per_s", "seconds"]),
    "c-json_agg": (["codec", "driver"], ["events_per_s", "seconds"]),
    "write": (
        ["batch", "conns", "route"],
        ["events_per_s", "commits_per_s", "p50_ms", "p99_ms", "position_holes"],
    ),
    "reader": (
        [],
        [
            "head_read_rows_per_s",
            "xid_read_rows_per_s",
            "head_page_server_ms",
            "xid_page_server_ms",
            "head_empty_poll_us",
            "xid_empty_poll_us",
            "fill_head_events_per_s",
            "fill_xid_events_per_s",
        ],
    ),
    "xid-behaviour": (
        [],
        [
            "fill_txns",
            "fill_txns_noncontiguous",
            "position_inversions_in_xid_order",
            "xid_hole_after_rollback_of_5",
            "head_hole_after_rollback_of_5",
            "visible_of_10_committed_while_readonly_txn_open",
            "visible_of_10_committed_while_xid_holding_txn_open",
            "visible_of_10_committed_after_xid_holding_txn_ends",
            "live_load_events_per_s",
            "live_invisible_committed_rows_p50",
            "live_invisible_committed_rows_p95",
            "live_invisible_committed_rows_max",
        ],
    ),
}


def fmt(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def cell(values: list[float]) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(values))}-{fmt(max(values))}]"


def summarize(path: str) -> None:
    groups: dict[str, dict[tuple, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    machines = []
    with open(path) as f:
        records = [json.loads(line) for line in f]
    for rec in records:
        part = rec["part"]
        if part.startswith("machine") or part == "pg-settings":
            machines.append(rec)
            continue
        ids, _ = LAYOUT[part]
        groups[part][tuple(rec.get(k) for k in ids)].append(rec)
    print(f"## {path}\n")
    loads = [m["loadavg_1m_at_start"] for m in machines if "loadavg_1m_at_start" in m]
    if loads:
        print(
            f"invocations: {len(loads)}, 1-min load average at start: {min(loads)}-{max(loads)}\n"
        )
    for part, rows in groups.items():
        ids, metrics = LAYOUT[part]
        metrics = [m for m in metrics if any(m in r for rs in rows.values() for r in rs)]
        print(f"### {part}\n")
        print("| " + " | ".join([*ids, "runs", *metrics]) + " |")
        print("|" + "---|" * (len(ids) + 1 + len(metrics)))
        for key in sorted(rows, key=lambda k: tuple(str(x) for x in k)):
            rs = rows[key]
            cells = [cell([r[m] for r in rs if m in r]) for m in metrics]
            print("| " + " | ".join([str(k) for k in key] + [str(len(rs))] + cells) + " |")
        print()
        plans = {r.get("head_plan") for rs in rows.values() for r in rs} | {
            r.get("xid_plan") for rs in rows.values() for r in rs
        }
        for p in sorted(x for x in plans if x):
            print(f"    {p}")
        if any(plans):
            print()


if __name__ == "__main__":
    for p in sys.argv[1:]:
        summarize(p)
