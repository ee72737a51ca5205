"""The ``tidings`` command line, run as a user runs it: a process of its own, on real
SQLite files and on PostgreSQL, its output read from a pipe or from a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import tidings

UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/x"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def environment(**extra: str) -> dict[str, str]:
    """The user's environment without tidings' own variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIDINGS_STORE", "TIDINGS_DEBUG")}
    env.update(extra)
    return env


def tidings_cli(
    *args: str,
    store: str | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tidings ARGS [--store STORE]`` with stdout and stderr on pipes."""
    argv = [sys.executable, "-m", "tidings.cli", *args]
    if store is not None:
        argv += ["--store", store]
    return subprocess.run(
        argv,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment() if env is None else env,
    )


def ok(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON lines of a command that succeeded quietly."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one stderr line of a command that failed with ``code`` and printed nothing."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def on_terminal(*args: str, store: str) -> str:
    """Run ``tidings ARGS --store STORE`` with stdout on a terminal; its text, plain."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", *args, "--store", store],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=environment(COLUMNS="200", TERM="xterm"),
    ) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == b""
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def append_events(url: str) -> None:
    """Four events in three streams of two categories (appended through the API: quicker)."""

    async def append() -> None:
        store = await tidings.connect(url)
        async with store:
            for stream, event_type, data in [
                ("order-1", "Placed", {"total": 10}),
                ("order-1", "Paid", {"amount": 10}),
                ("stock-7", "Reserved", {"order": 1}),
                ("order-2", "Placed", {"total": 5}),
            ]:
                await store.append(stream, [tidings.NewEvent(event_type, data)])

    asyncio.run(append())


async def run_subscription(url: str, name: str, events: int) -> None:
    """Run the subscription ``name`` until it has handled ``events`` events, then stop it."""
    seen: list[int] = []
    done = asyncio.Event()

    async def handler(batch: list[tidings.RecordedEvent]) -> None:
        seen.extend(e.position for e in batch)
        if len(seen) >= events:
            done.set()

    store = await tidings.connect(url)
    async with store, store.subscribe(name, handler, start="beginning"):
        await asyncio.wait_for(done.wait(), 30)


# -- a session on each durable backend ---------------------------------------------------


@pytest.mark.durable
def test_a_session_appends_reads_tails_and_lists(store_url: str) -> None:
    event_id = str(uuid.uuid4())
    placed = ok(
        tidings_cli(
            "append",
            "order-1",
            "Placed",
            '{"total": 10}',
            "--expected-version",
            "no_stream",
            "--metadata",
            '{"by": "alice"}',
            store=store_url,
        )
    )
    assert placed == [{"stream": "order-1", "first_version": 0, "last_version": 0, "position": 1}]
    paid = tidings_cli(
        "append",
        "order-1",
        "Paid",
        "-",
        "-e",
        "0",
        "--id",
        event_id,
        store=store_url,
        stdin='{"amount": 10, "items": [1, 2]}\n',
    )
    assert ok(paid) == [{"stream": "order-1", "first_version": 1, "last_version": 1, "position": 2}]
    ok(tidings_cli("append", "order-1", "Shipped", store=store_url))  # no DATA: null
    ok(tidings_cli("append", "stock-7", "Reserved", '{"order": 1}', store=store_url))

    events = ok(tidings_cli("read", "order-1", store=store_url))
    assert [(e["version"], e["position"], e["type"], e["data"]) for e in events] == [
        (0, 1, "Placed", {"total": 10}),
        (1, 2, "Paid", {"amount": 10, "items": [1, 2]}),
        (2, 3, "Shipped", None),
    ]
    assert events[0]["metadata"] == {"by": "alice"} and events[1]["metadata"] == {}
    assert events[1]["id"] == event_id and events[0]["stream"] == "order-1"
    assert events[0]["time"].endswith("Z")
    newest = ok(tidings_cli("read", "order-1", "--backwards", "--limit", "2", store=store_url))
    assert [e["version"] for e in newest] == [2, 1]
    later = ok(tidings_cli("read", "order-1", "--from-version", "1", store=store_url))
    assert [e["version"] for e in later] == [1, 2]
    assert ok(tidings_cli("read", "order-404", store=store_url)) == []  # not an error

    log = ok(tidings_cli("tail", "--category", "stock", store=store_url))
    assert [(e["position"], e["stream"]) for e in log] == [(4, "stock-7")]
    log = ok(tidings_cli("tail", "--from-position", "1", "--limit", "2", store=store_url))
    assert [e["position"] for e in log] == [2, 3]

    streams = ok(tidings_cli("streams", store=store_url))
    assert streams == [{"name": "order-1", "version": 2}, {"name": "stock-7", "version": 0}]

    assert ok(tidings_cli("subscriptions", store=store_url)) == []
    asyncio.run(run_subscription(store_url, "audit", 4))
    ok(tidings_cli("append", "order-2", "Placed", store=store_url))
    [audit] = ok(tidings_cli("subscriptions", store=store_url))
    assert audit["name"] == "audit" and audit["state"] == "stopped"
    assert (audit["checkpoint"], audit["head"], audit["lag"]) == (4, 5, 1)


@pytest.mark.durable
def test_tail_follow_prints_what_another_process_appends_and_ends_on_ctrl_c(
    store_url: str,
) -> None:
    ok(tidings_cli("append", "order-1", "Placed", '{"n": 1}', store=store_url))
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", "tail", "-f", "-c", "order", "--store", store_url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    ) as follower:
        assert follower.stdout is not None and follower.stderr is not None
        stdout = follower.stdout

        def read_lines() -> None:
            for line in stdout:
                lines.put(line)

        reader = threading.Thread(target=read_lines)
        reader.start()
        try:
            assert json.loads(lines.get(timeout=30))["position"] == 1  # caught up, now live
            ok(tidings_cli("append", "stock-7", "Reserved", store=store_url))  # filtered out
            ok(tidings_cli("append", "order-2", "Placed", '{"n": 2}', store=store_url))
            live = json.loads(lines.get(timeout=30))
            assert (live["position"], live["stream"], live["data"]) == (3, "order-2", {"n": 2})
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=30) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
            reader.join(timeout=30)
        assert follower.stderr.read() == ""
    assert lines.empty()


# -- the rest on SQLite files ---------------------------------------------------------


def test_tail_filters_by_category_type_and_stream_prefix(sqlite_url: str) -> None:
    append_events(sqlite_url)

    def positions(*args: str) -> list[int]:
        return [e["position"] for e in ok(tidings_cli("tail", *args, store=sqlite_url))]

    assert positions() == [1, 2, 3, 4]
    assert positions("-c", "order") == [1, 2, 4]
    assert positions("-c", "order", "-c", "stock", "--limit", "3") == [1, 2, 3]
    assert positions("-t", "Paid", "-t", "Reserved") == [2, 3]
    assert positions("--stream-prefix", "order-1") == [1, 2]
    assert positions("-c", "order", "--type", "Placed", "--from-position", "1") == [4]


def test_streams_by_prefix_and_limit(sqlite_url: str) -> None:
    append_events(sqlite_url)
    assert ok(tidings_cli("streams", "--prefix", "order-", store=sqlite_url)) == [
        {"name": "order-1", "version": 1},
        {"name": "order-2", "version": 0},
    ]
    assert ok(tidings_cli("streams", "--limit", "1", store=sqlite_url)) == [
        {"name": "order-1", "version": 1}
    ]


def test_json_lines_when_piped_or_asked_and_a_table_on_a_terminal(sqlite_url: str) -> None:
    ok(tidings_cli("append", "order-1", "Placed", '{"total": 10}', store=sqlite_url))
    ok(tidings_cli("append", "order-1", "Paid", '"[bold]not markup"', store=sqlite_url))
    # (rich markup in data is shown as it is, not interpreted)
    piped = tidings_cli("read", "order-1", store=sqlite_url)
    assert piped.stdout == tidings_cli("read", "order-1", "--json", store=sqlite_url).stdout
    assert [e["type"] for e in ok(piped)] == ["Placed", "Paid"]

    table = on_terminal("read", "order-1", store=sqlite_url)
    header, rule, first, second = table.strip("\n").splitlines()
    assert header.split()[:4] == ["position", "stream", "version", "type"] and "data" in header
    assert set(rule) == {"─"}
    assert first.split()[:4] == ["1", "order-1", "0", "Placed"] and '{"total":10}' in first
    assert '"[bold]not markup"' in second
    assert "{" not in on_terminal("streams", store=sqlite_url)

    lines = on_terminal("read", "order-1", "--json", store=sqlite_url).splitlines()
    assert [json.loads(line)["version"] for line in lines] == [0, 1]


def test_the_default_store_is_tidings_db_here_unless_tidings_store_says(tmp_path: Path) -> None:
    assert ok(tidings_cli("append", "order-1", "Placed", cwd=tmp_path))[0]["position"] == 1
    assert (tmp_path / "tidings.db").exists()
    other = tmp_path / "other.db"
    env = environment(TIDINGS_STORE=f"sqlite:///{other}")
    ok(tidings_cli("append", "order-9", "Placed", cwd=tmp_path, env=env))
    assert [s["name"] for s in ok(tidings_cli("streams", cwd=tmp_path, env=env))] == ["order-9"]
    assert [s["name"] for s in ok(tidings_cli("streams", cwd=tmp_path))] == ["order-1"]


# -- errors: one line on stderr, an exit code that says what happened -----------------


def test_a_wrong_expected_version_exits_3_and_writes_nothing(sqlite_url: str) -> None:
    ok(tidings_cli("append", "order-1", "Placed", store=sqlite_url))
    message = failed(
        tidings_cli("append", "order-1", "Placed", "-e", "no_stream", store=sqlite_url), 3
    )
    assert message == "error: stream 'order-1': expected NO_STREAM, found version 0"
    message = failed(tidings_cli("append", "order-1", "Paid", "-e", "5", store=sqlite_url), 3)
    assert "expected 5, found version 0" in message
    event_id = str(uuid.uuid4())
    ok(tidings_cli("append", "order-2", "Placed", "1", "--id", event_id, store=sqlite_url))
    again = tidings_cli("append", "order-2", "Placed", "1", "--id", event_id, store=sqlite_url)
    assert ok(again)[0]["position"] == 2  # an idempotent retry: the first result
    changed = tidings_cli("append", "order-2", "Placed", "2", "--id", event_id, store=sqlite_url)
    assert event_id in failed(changed, 3)
    assert len(ok(tidings_cli("tail", store=sqlite_url))) == 2


def test_bad_json_exits_2_and_writes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    bad = [
        (["append", "order-1", "Placed", "{bad"], None, "DATA is not valid JSON"),
        (["append", "order-1", "Placed", "-"], "{'single': 'quotes'}", "DATA from stdin"),
        (["append", "order-1", "Placed", "--metadata", "[1]"], None, "JSON object"),
        (["append", "order-1", "Placed", "-e", "later"], None, "--expected-version"),
        (["append", "order-1", "Placed", "-e", "-1"], None, "--expected-version"),
    ]
    for args, stdin, words in bad:
        assert words in failed(tidings_cli(*args, store=sqlite_url, stdin=stdin), 2)
    assert not (tmp_path / "events.db").exists()  # checked before the store was opened
    ok(tidings_cli("append", "order-1", "Placed", "1", store=sqlite_url))
    failed(tidings_cli("append", "order-1", "Paid", "[1,", store=sqlite_url), 2)
    failed(tidings_cli("append", "", "Paid", store=sqlite_url), 2)  # InvalidEvent
    assert len(ok(tidings_cli("read", "order-1", store=sqlite_url))) == 1


def test_bad_urls_and_bad_usage_exit_2(sqlite_url: str, tmp_path: Path) -> None:
    for url in ["nope://x", "sqlite://host/x.db", "sqlite:///x.db?max_size=2"]:
        result = tidings_cli("append", "order-1", "Placed", store=url, cwd=tmp_path)
        assert "error: " in failed(result, 2)
    assert list(tmp_path.iterdir()) == []
    for args in [["read"], ["read", "s", "--limit", "-1"], ["tail", "--bogus"], ["frobnicate"]]:
        result = tidings_cli(*args, store=sqlite_url)
        assert result.returncode == 2, result.stderr
        assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert "--category" in failed(tidings_cli("tail", "-c", "", store=sqlite_url), 2)
    server = tidings_cli("subscriptions", store="http://127.0.0.1:1")  # nobody listens there
    assert "unavailable" in failed(server, 5)


def test_a_read_of_a_sqlite_file_that_does_not_exist_exits_4(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in [["read", "order-1"], ["tail"], ["tail", "-f"], ["streams"], ["subscriptions"]]:
        assert "no SQLite store at" in failed(tidings_cli(*command, store=url), 4)
    assert not (tmp_path / "typo.db").exists()


def test_an_unreachable_postgresql_exits_5() -> None:
    for command in [["append", "order-1", "Placed"], ["read", "order-1"], ["tail", "-f"]]:
        message = failed(tidings_cli(*command, store=UNREACHABLE_POSTGRES), 5)
        assert "store unavailable at postgresql://postgres@127.0.0.1:1/x" in message


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("tidings")
    if not script.exists():
        pytest.skip(f"no console script at {script} (not installed with pip install -e .)")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, env=environment()
    )
    assert result.returncode == 0, result.stderr
    for command in ["append", "read", "tail", "streams", "subscriptions"]:
        assert command in result.stdout
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"tidings {tidings.__version__}"
