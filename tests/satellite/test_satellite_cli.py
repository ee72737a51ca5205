"""``tidings satellite status``: a satellite's standing, read from its file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tidings
from tidings.satellite import Satellite


def status(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tidings.cli", "satellite", "status", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


async def test_status_shows_the_pending_writes_of_a_satellite_that_never_reached_its_server(
    tmp_path: Path,
) -> None:
    file = tmp_path / "till.db"
    async with Satellite(
        f"sqlite:///{file}", "http://127.0.0.1:9", ["sale"], satellite_id="t1"
    ) as sat:
        await sat.append("sale-1", [tidings.NewEvent("Sold", {"n": 1})])
        await sat.append("sale-1", [tidings.NewEvent("Sold", {"n": 2})])
    done = status(str(file), "--json", "--server", "http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["satellite_id"], found["pending"], found["conflicts"]) == ("t1", 2, 0)
    assert found["online"] is False and "StoreUnavailable" in found["last_error"]
    assert found["position"] == 0 and found["last_sync"] is None


def test_status_of_a_file_that_is_not_a_satellites_exits_4(tmp_path: Path) -> None:
    missing = status(str(tmp_path / "nothing.db"))
    assert missing.returncode == 4 and "no satellite file" in missing.stderr
    (tmp_path / "plain.db").write_bytes(b"")
    plain = status(f"sqlite:///{tmp_path / 'plain.db'}")
    assert plain.returncode == 4 and "not a satellite" in plain.stderr, plain.stderr
