"""Follow a tidings server's log over its WebSocket (docs/protocol.md), resuming after cuts.

    python examples/ws_follow.py ws://127.0.0.1:8700/ws [--category order] [--count N]

It prints one line per event. It acks each batch once it has printed it. When the
connection drops, or the server closes it (say with 1012, on a restart), it reconnects
and goes on from the last position it handled. With ``--count`` it stops after that
many events.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import websockets


async def follow(url: str, category: str | None, count: int | None, token: str | None) -> None:
    """Print the log's events (of ``category``), resuming after every cut."""
    handled = 0  # the last position handled: where a new connection resumes
    seen = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while count is None or seen < count:
        try:
            async with websockets.connect(
                url, subprotocols=[websockets.Subprotocol("tidings.v1")], additional_headers=headers
            ) as ws:
                subscribe = {"type": "subscribe", "sub": "log", "from_position": handled}
                if category:
                    subscribe["filter"] = {"categories": [category]}
                await ws.send(json.dumps(subscribe))
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "events":
                        for event in message["events"]:
                            print(event["position"], event["stream"], event["type"], flush=True)
                        seen += len(message["events"])
                        handled = message["last_position"]
                        ack = {"type": "ack", "sub": "log", "batch": message["batch"]}
                        await ws.send(json.dumps(ack))
                        if count is not None and seen >= count:
                            return
                    elif message["type"] == "error":
                        raise SystemExit(f"error: {message['error']}: {message['message']}")
        except (OSError, websockets.ConnectionClosedError, websockets.InvalidHandshake):
            await asyncio.sleep(1)  # the server is away: try again from `handled`


def main() -> None:
    """Parse the command line and follow."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8700/ws")
    parser.add_argument("--category")
    parser.add_argument("--count", type=int)
    parser.add_argument("--token", help="an API key or a JWT, when the server has auth")
    args = parser.parse_args()
    asyncio.run(follow(args.url, args.category, args.count, args.token))


if __name__ == "__main__":
    main()
