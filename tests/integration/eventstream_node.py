"""A node for the event-stream take-over tests (run as a script, never imported).

Usage: python eventstream_node.py URL NODE_ID DEFAULTS_JSON

Opens the store at URL and runs the event-stream dispatcher as node NODE_ID, with the
``Defaults`` given as JSON (the test's, so that every node has the same lease period),
webhooks allowed on loopback. Prints ``ready`` once the dispatcher runs, then runs
until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from ipaddress import ip_network

import msgspec

import tidings
from tidings.delivery.definitions import Defaults
from tidings.delivery.dispatcher import Dispatcher
from tidings.delivery.streams import EventStreams
from tidings.store.base import StoreFront


async def main(url: str, node_id: str, defaults_json: str) -> None:
    store = await tidings.connect(url)
    assert isinstance(store, StoreFront)
    defaults = msgspec.json.decode(defaults_json, type=Defaults)
    streams = EventStreams(store, defaults, allow=(ip_network("127.0.0.0/8"),))
    async with store, Dispatcher(streams, node_id=node_id):
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
