"""Run every ADR measurement 3 times, only while the machine is otherwise quiet.

The dev machine has 2 cores and may be shared with other sessions' benchmarks, so each
invocation of driver_codec.py / global_order.py is:

  1. started only after 3 s in which processes outside this runner used < 5 % of a core
     (waits up to --max-wait seconds, then starts anyway and says so);
  2. watched once a second: CPU time used by *foreign* processes (not this runner's
     tree, not kernel threads, not postgres' own background processes, not the postgres
     backends whose client socket belongs to this runner's tree) is summed;
  3. kept only if foreign processes used < 5 % of a core on average (--max-avg) and never
     more than 50 % of a core in a 1-s sample (--max-peak); otherwise its result lines go
     to results/<script>.discarded.jsonl and the invocation is queued again, until
     --deadline-min. Invocations already kept (per results/run_log.jsonl) are not re-run,
     so the runner can be stopped and restarted.

Kept result lines go to bench/adr/results/{driver_codec,global_order}.jsonl, and a
log of every attempt (with the foreign CPU figures) to results/run_log.jsonl.

    PYTHONPATH=/tmp/adr-pydeps .venv/bin/python bench/adr/run_all.py
    .venv/bin/python bench/adr/summarize.py bench/adr/results/driver_codec.jsonl bench/adr/results/global_order.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def proc_table() -> dict[int, tuple[int, str, str, int]]:
    """pid -> (ppid, comm, cmdline, cpu ticks)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rparen = stat.rindex(")")
        comm = stat[stat.index("(") + 1 : rparen]
        fields = stat[rparen + 2 :].split()
        out[int(d)] = (int(fields[1]), comm, cmd, int(fields[11]) + int(fields[12]))
    return out


def my_tree(table: dict[int, tuple[int, str, str, int]], mine: int) -> set[int]:
    tree = {mine}
    changed = True
    while changed:
        changed = False
        for pid, v in table.items():
            if v[0] in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return tree


def local_ports(pids: set[int]) -> set[int]:
    """Local TCP ports of the sockets these processes hold (to recognise their PG backends)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[9] in inodes:
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def foreign_pids(table: dict[int, tuple[int, str, str, int]], mine: int) -> set[int]:
    """Processes that are not this runner's tree, not kernel threads, not postgres' own
    background processes, and not postgres backends serving a client of this runner's tree."""
    tree = my_tree(table, mine)
    ports = local_ports(tree)
    out = set()
    for pid, (ppid, comm, cmd, _) in table.items():
        if pid in tree or ppid == 2 or pid in (1, 2):
            continue
        if comm == "postgres" or cmd.startswith("postgres:"):
            # backend title: "postgres: 15/main: USER DATABASE 127.0.0.1(PORT) STATE"
            parts = cmd.split()
            client = parts[4] if len(parts) >= 5 else ""
            if "(" not in client and client != "[local]":
                continue  # background process: neutral
            port = client[client.find("(") + 1 : client.find(")")] if "(" in client else ""
            if port.isdigit() and int(port) in ports:
                continue
        out.add(pid)
    return out


def foreign_ticks(mine: int) -> dict[int, int]:
    t = proc_table()
    return {pid: t[pid][3] for pid in foreign_pids(t, mine)}


def foreign_cpu_between(a: dict[int, int], b: dict[int, int], seconds: float) -> float:
    """Foreign CPU use between two samples, in cores (1.0 = one core busy)."""
    ticks = sum(max(0, b[pid] - a.get(pid, b[pid])) for pid in b)
    return ticks / TICK / seconds


def wait_quiet(mine: int, max_wait: float) -> float:
    start = time.time()
    while True:
        a = foreign_ticks(mine)
        time.sleep(3)
        load = foreign_cpu_between(a, foreign_ticks(mine), 3)
        if load < 0.05 or time.time() - start > max_wait:
            return time.time() - start


def run_one(cmd: list[str], mine: int) -> tuple[int, list[str], float, float, float]:
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as tmp:
        out = tmp.name
    proc = subprocess.Popen([*cmd, "--out", out])
    samples = []
    prev, t_prev, t0 = foreign_ticks(mine), time.time(), time.time()
    while proc.poll() is None:
        time.sleep(1)
        cur, t_cur = foreign_ticks(mine), time.time()
        samples.append(foreign_cpu_between(prev, cur, t_cur - t_prev))
        prev, t_prev = cur, t_cur
    elapsed = time.time() - t0
    lines = Path(out).read_text().splitlines()
    os.unlink(out)
    avg = sum(samples) / len(samples) if samples else 0.0
    peak = max(samples) if samples else 0.0
    return proc.returncode, lines, avg, peak, elapsed


def job_list(runs: int, only: str | None, py: str) -> list[tuple[str, str, list[str]]]:
    """(script, key, argv) for every invocation wanted; key identifies it in run_log.jsonl."""
    jobs = []
    for i in range(1, runs + 1):
        if only in (None, "driver_codec"):
            for part in ("write", "read"):
                args = ["--part", part, "--rotate", str(i)]
                jobs.append(
                    (
                        "driver_codec",
                        f"driver_codec {part} #{i}",
                        [py, str(HERE / "driver_codec.py"), *args],
                    )
                )
        if only in (None, "global_order"):
            for mode in ("head", "xid", "reader"):
                jobs.append(
                    (
                        "global_order",
                        f"global_order {mode} #{i}",
                        [py, str(HERE / "global_order.py"), "--mode", mode],
                    )
                )
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--max-wait",
        type=float,
        default=900,
        help="max seconds to wait for quiet before one attempt",
    )
    ap.add_argument(
        "--deadline-min", type=float, default=60, help="stop retrying after this many minutes"
    )
    ap.add_argument(
        "--max-avg", type=float, default=0.05, help="max foreign CPU, average over the run (cores)"
    )
    ap.add_argument(
        "--max-peak", type=float, default=0.5, help="max foreign CPU in any 1-s sample (cores)"
    )
    ap.add_argument("--only", choices=["driver_codec", "global_order"])
    args = ap.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    log_path = results / "run_log.jsonl"
    py = sys.executable
    mine = os.getpid()
    deadline = time.time() + args.deadline_min * 60
    # resume: invocations already kept (by key) are not run again
    kept = set()
    if log_path.exists():
        kept = {
            json.loads(x).get("key")
            for x in log_path.read_text().splitlines()
            if json.loads(x).get("kept")
        }
    pending = [j for j in job_list(args.runs, args.only, py) if j[1] not in kept]
    attempts: dict[str, int] = {}
    while pending and time.time() < deadline:
        script, key, cmd = pending.pop(0)
        attempts[key] = attempts.get(key, 0) + 1
        waited = wait_quiet(mine, args.max_wait)
        rc, lines, avg, peak, elapsed = run_one(cmd, mine)
        clean = rc == 0 and avg < args.max_avg and peak < args.max_peak
        log = {
            "key": key,
            "cmd": " ".join(cmd[1:]),
            "attempt": attempts[key],
            "rc": rc,
            "waited_s": round(waited),
            "elapsed_s": round(elapsed, 1),
            "foreign_cpu_avg_cores": round(avg, 3),
            "foreign_cpu_peak_cores": round(peak, 3),
            "kept": clean,
            "thresholds": {"avg": args.max_avg, "peak": args.max_peak},
        }
        print(json.dumps(log), flush=True)
        with open(log_path, "a") as f:
            f.write(json.dumps(log) + "\n")
        target = results / (f"{script}.jsonl" if clean else f"{script}.discarded.jsonl")
        with open(target, "a") as f:
            for line in lines:
                rec = json.loads(line)
                rec["foreign_cpu_avg_cores"] = round(avg, 3)
                f.write(json.dumps(rec) + "\n")
        if not clean:
            pending.append((script, key, cmd))  # retry later, after the other jobs
    print(json.dumps({"done": not pending, "missing": [k for _, k, _ in pending]}), flush=True)


if __name__ == "__main__":
    main()
