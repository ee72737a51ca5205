"""A server's pull subscriptions seen through the remote store and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import tidings
from tests.served import served


async def test_the_remote_store_lists_and_resets_the_servers_subscriptions(
    tmp_path: Path,
) -> None:
    with served(f"sqlite:///{tmp_path / 'e.db'}") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            made = await http.post(
                "/subscriptions", json={"name": "billing", "filter": {"categories": ["order"]}}
            )
            assert made.status_code == 201, made.text
        async with await tidings.connect(server.url) as remote:
            await remote.append("order-1", [tidings.NewEvent("Placed"), tidings.NewEvent("Paid")])
            [info] = await remote.subscriptions()
            assert (info.name, info.checkpoint, info.head, info.lag) == ("billing", 0, 2, 2)
            await remote.reset_subscription("billing", 2)
            [moved] = await remote.subscriptions()
            assert (moved.checkpoint, moved.lag) == (2, 0)
            with pytest.raises(tidings.errors.NotFound):
                await remote.reset_subscription("nobody", 0)
        command = [sys.executable, "-m", "tidings.cli", "subscriptions", "--store", server.url]
        listed = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(listed.communicate(), 60)
    assert listed.returncode == 0, err
    [row] = [json.loads(line) for line in out.decode().splitlines()]
    assert row["name"] == "billing" and row["checkpoint"] == 2
