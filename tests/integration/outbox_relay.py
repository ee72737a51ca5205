"""A relay process for the outbox tests (run as a script, never imported by pytest).

Usage: python outbox_relay.py OUTBOX_URL NOTIFIER_URL

Opens the outbox and the notifier, runs a relay, prints ``{"ready": true}``, and
relays until its stdin closes; then it stops the relay and prints
``{"published": N, "failed": N}``, one JSON object a line.
"""

from __future__ import annotations

import asyncio
import json
import sys

import tidings.notify
from tidings.outbox import Outbox


async def main(outbox_url: str, notifier_url: str) -> None:
    outbox = await Outbox.open(outbox_url)
    notifier = await tidings.notify.connect(notifier_url)
    relay = outbox.relay(notifier, batch_size=10, poll_interval=0.02)
    await relay.start()
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await relay.stop()
    stats = relay.stats()
    print(json.dumps({"published": stats.published, "failed": stats.failed}), flush=True)
    await outbox.close()
    await notifier.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
