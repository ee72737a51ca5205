"""``tidings backup`` and ``tidings restore`` run as a user runs them: JSON lines on a
pipe, a progress bar and a table on a terminal, exit 7 and one line for what is refused."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_cli import ANSI, environment, failed, ok, tidings_cli

pytestmark = pytest.mark.durable


def test_backup_then_restore_into_the_other_backend_and_back(
    store_url: str, tmp_path: Path
) -> None:
    for n in range(3):
        ok(tidings_cli("append", f"order-{n}", "Placed", f'{{"n": {n}}}', store=store_url))
    file = tmp_path / "cli.backup"
    [info] = ok(tidings_cli("backup", store_url, str(file)))
    assert info["position"] == info["events"] == 3 and info["path"] == str(file)
    other = f"sqlite:///{tmp_path / 'restored.db'}"
    [restored] = ok(tidings_cli("restore", str(file), other))
    assert restored["position"] == 3 and restored["source_identity"] == info["identity"]
    assert restored["identity"] != info["identity"]
    events = ok(tidings_cli("tail", store=other))
    assert [(e["position"], e["stream"], e["data"]) for e in events] == [
        (n + 1, f"order-{n}", {"n": n}) for n in range(3)
    ]


def test_refusals_exit_7_and_write_nothing(sqlite_url: str, tmp_path: Path) -> None:
    ok(tidings_cli("append", "order-1", "Placed", "{}", store=sqlite_url))
    file = tmp_path / "cli.backup"
    ok(tidings_cli("backup", sqlite_url, str(file)))
    assert "exists already" in failed(tidings_cli("backup", sqlite_url, str(file)), 7)
    assert "not empty" in failed(tidings_cli("restore", str(file), sqlite_url), 7)
    [forced] = ok(tidings_cli("restore", str(file), sqlite_url, "--force"))
    assert forced["position"] == 1

    target = tmp_path / "target.db"
    conn = sqlite3.connect(file)
    conn.execute("UPDATE tidings_backup SET format = 2")
    conn.commit()
    conn.close()
    assert "newer" in failed(tidings_cli("restore", str(file), f"sqlite:///{target}"), 7)
    file.write_bytes(file.read_bytes()[:4096])
    assert "damaged or truncated" in failed(
        tidings_cli("restore", str(file), f"sqlite:///{target}"), 7
    )
    assert "no such backup" in failed(
        tidings_cli("restore", str(tmp_path / "none"), f"sqlite:///{target}"), 7
    )
    assert not target.exists()
    assert "no SQLite store" in failed(
        tidings_cli("backup", f"sqlite:///{tmp_path / 'none.db'}", str(tmp_path / "x")), 4
    )


def on_terminal(*args: str) -> str:
    """Run ``tidings ARGS`` with stdout and stderr on a terminal; its text, plain."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
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
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_on_a_terminal_a_progress_bar_and_a_table(sqlite_url: str, tmp_path: Path) -> None:
    ok(tidings_cli("append", "order-1", "Placed", "{}", store=sqlite_url))
    file = tmp_path / "tty.backup"
    shown = on_terminal("backup", sqlite_url, str(file))
    assert "position" in shown and "source identity" in shown and file.exists()
    shown = on_terminal("restore", str(file), f"sqlite:///{tmp_path / 'r.db'}")
    assert "1/1 events" in shown  # the progress bar, before the table
    assert "identity" in shown and "was" in shown
