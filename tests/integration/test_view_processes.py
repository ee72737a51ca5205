"""A view folded and written in one process, watched and read in another."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.views import Change, View

SCRIPT = Path(__file__).with_name("view_folder.py")
COUNT = 300


def expected_state() -> dict[str, Any]:
    """The fold of view_folder.py's changes, written out by hand."""
    state: dict[str, dict[str, Any]] = {}
    for i in range(COUNT):
        key = str(i % 10)
        if i % 7 == 6:
            state.pop(key, None)
        elif i % 10 == i:
            state[key] = {"n": i, "since": i}
        else:
            state[key] = {**state.get(key, {}), "n": i}
    return state


@pytest.mark.durable
async def test_a_watcher_in_another_process_ends_at_the_folded_state(store_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        store_url,
        str(COUNT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        store = await tidings.connect(store_url)
        async with store:
            view = View(store, "profiles", category="profile", poll_interval=0.05)
            assert not view.running  # this process only reads and watches
            async with view.watch() as watch:
                proc.stdin.write(b"go\n")
                last = int(await asyncio.wait_for(proc.stdout.readline(), 60))
                state: dict[str, Any] = {}
                seen: list[Change] = []
                async with asyncio.timeout(30):
                    async for change in watch:
                        seen.append(change)
                        if change.value is None:
                            state.pop(change.key, None)
                        else:
                            state[change.key] = change.value
                        if change.position >= last or (
                            state == expected_state() and view.position >= last
                        ):
                            break
            assert state == expected_state()
            # Changes of one key come in log order, and fewer than were made (stacked or
            # not, never more).
            for key in {c.key for c in seen}:
                positions = [c.position for c in seen if c.key == key]
                assert positions == sorted(positions)
            assert len(seen) <= COUNT
            assert await view.get(at_least=last, timeout=10) == expected_state()
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
