"""A real browser on the WebSocket gateway: headless Chromium (Debian's package) driven
by Playwright opens ``new WebSocket(url, ["tidings.v1"])`` on a tidings server from a
page of another origin, subscribes, acks every batch and, when the server is stopped
with SIGTERM mid-stream (``closing``, then close code 1012) and started again on the
same port and SQLite file, reconnects and resumes from the last batch it handled:
every event of its category once, in order. The page also records what the browser
reports for each other close the gateway decides on (a foreign subprotocol, bad
credentials, no credentials in time, a foreign Origin).

Under CI=true a missing browser or Playwright fails the test; elsewhere it is skipped.
``scripts/browser.sh`` installs Chromium when it is missing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.gateway.harness import Server, log_positions, write_all
from tidings.server.auth import hash_key

KEY = "browser-ws-key-0123456789abcdef"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tidings ws</title><link rel="icon" href="data:,"></head>
<body><pre id="log"></pre>
<script>
  // A follower: subscribes, acks every batch, keeps the last batch's last_position
  // and resumes from it on every reconnect, 200 ms after each close.
  window.state = {handled: 0, positions: [], log: [], opens: 0, connects: 0,
                  stopped: false, errors: []};
  window.follow = (url, category) => {
    const s = window.state;
    const n = ++s.connects;
    const ws = new WebSocket(url, ["tidings.v1"]);
    ws.onopen = () => { s.opens += 1; s.log.push({n, kind: "open", protocol: ws.protocol}); };
    ws.onmessage = (message) => {
      const m = JSON.parse(message.data);
      if (m.type === "ready") {
        ws.send(JSON.stringify({type: "subscribe", sub: "s",
          filter: {categories: [category]}, from_position: s.handled}));
      } else if (m.type === "events") {
        for (const e of m.events) s.positions.push(e.position);
        s.handled = m.last_position;
        ws.send(JSON.stringify({type: "ack", sub: "s", batch: m.batch}));
        document.getElementById("log").textContent = s.positions.length + " events";
      } else if (m.type === "closing") {
        s.log.push({n, kind: "closing", code: m.code, resume: m.resume, handled: s.handled});
      } else if (m.type === "error") {
        s.errors.push(m);
      }
    };
    ws.onclose = (e) => {
      s.log.push({n, kind: "close", code: e.code, reason: e.reason, clean: e.wasClean});
      if (!s.stopped) setTimeout(() => window.follow(url, category), 200);
    };
  };

  // One connection: everything it got, and how it closed (or that it did not in time).
  // With ``leave``, the page closes it itself (1000) once ``ready`` has come.
  window.probe = (url, protocols, within, leave) => new Promise((resolve) => {
    const seen = {opened: false, protocol: null, messages: [], errored: false};
    const ws = new WebSocket(url, protocols);
    const timer = setTimeout(() => { ws.close(); resolve({...seen, timeout: true}); }, within);
    ws.onopen = () => { seen.opened = true; seen.protocol = ws.protocol; };
    ws.onerror = () => { seen.errored = true; };
    ws.onmessage = (message) => {
      const m = JSON.parse(message.data);
      seen.messages.push(m);
      if (leave && m.type === "ready") ws.close(1000, "done");
    };
    ws.onclose = (e) => {
      clearTimeout(timer);
      resolve({...seen, code: e.code, reason: e.reason, clean: e.wasClean});
    };
  });
</script></body></html>
"""


def stop_all(servers: list[Server]) -> None:
    for server in servers:
        if server.process is not None and server.process.process.poll() is None:
            try:
                server.process.stop(signal.SIGTERM, timeout=15)
            except Exception:
                server.process.process.kill()
                server.process.process.wait()
                server.process.release()


async def state_of(page: Any) -> dict[str, Any]:
    found: dict[str, Any] = await page.evaluate("window.state")
    return found


async def until_count(page: Any, count: int, within: float) -> list[int]:
    """Wait until the page holds ``count`` positions; those it holds."""
    end = time.monotonic() + within
    while len((state := await state_of(page))["positions"]) < count:
        if time.monotonic() > end:
            raise AssertionError(
                f"the page has {len(state['positions'])} of {count} events; log {state['log']}"
            )
        await asyncio.sleep(0.05)
    positions: list[int] = state["positions"]
    return positions


@pytest.mark.slow
async def test_a_browser_websocket_resumes_across_a_1012_restart(
    browser: Any, page_origin: str, tmp_path: Path
) -> None:
    """The page's WebSocket gets each event of its category once, in order, though the
    server is stopped with SIGTERM mid-stream and started again on the same port and
    file: the page sees ``closing`` (1012, with resume positions) and a close 1012, and
    resumes from the ``last_position`` of the last batch it handled."""
    env = {"TIDINGS_CORS_ORIGINS": json.dumps([page_origin]), "TIDINGS_WS__BATCH_EVENTS": "25"}
    server = Server(f"sqlite:///{tmp_path / 'events.db'}", env)
    tag = "w" + os.urandom(3).hex()
    category = f"a{tag}"  # write_all writes a<tag>-* and b<tag>-*: the page follows one
    rng = random.Random(7)
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(page_origin)
        follow = "([url, category]) => window.follow(url, category)"
        await page.evaluate(follow, [server.ws, category])
        await page.wait_for_function("window.state.opens >= 1", timeout=10_000)

        await asyncio.wait_for(write_all(server, tag, rng, count=600), 20)
        before = len(await log_positions(server, category))
        await until_count(page, before, 10)  # caught up

        writer = asyncio.create_task(write_all(server, tag, rng, count=4000, first=600))
        try:
            await until_count(page, before + 200, 10)  # the live stream is moving
            assert not writer.done(), "the writer ended before the stop: not mid-stream"
            assert server.process is not None
            code = await asyncio.to_thread(server.process.stop, signal.SIGTERM)
            assert code == 0, server.process.output
            await asyncio.sleep(0.5)  # the page retries (and fails) meanwhile
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(writer, 30)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await asyncio.wait_for(write_all(server, tag, rng, count=300, first=4600), 20)

        stored = await log_positions(server, category)
        await until_count(page, len(stored), 15)
        await asyncio.sleep(0.3)  # a repeat would come now
        state = await state_of(page)
        assert state["positions"] == stored  # each once, in order, nothing missing
        assert state["errors"] == []

        # The stop: a closing message with 1012 and where to resume, then, on the same
        # connection, the browser's close event with code 1012 and the server's reason.
        # It is clean: tidings serve gives clients a moment to answer its close frames
        # before uvicorn's shutdown closes the transports.
        log = state["log"]
        restart = next(i for i, e in enumerate(log) if e["kind"] == "closing")
        closing = log[restart]
        assert [e["kind"] for e in log[:restart]] == ["open"], log  # no cut before it
        assert closing["code"] == 1012, closing
        assert closing["resume"]["s"] >= closing["handled"] > 0, closing
        closed = log[restart + 1]
        assert closed == {
            "n": closing["n"],
            "kind": "close",
            "code": 1012,
            "reason": "the server is restarting: reconnect and resume",
            "clean": True,  # the server waits for the browser's answer to its close frame
        }, log
        # While the server was down, each reconnect failed: Chromium reports 1006 (no
        # close frame; "net::ERR_CONNECTION_REFUSED" in its console). One that came
        # while the old process was still stopping would be refused with closing and
        # 1012 ("reconnect", no resume). Then one connection opened and stayed open.
        later = log[restart + 2 :]
        assert later[-1]["kind"] == "open" and later[-1]["protocol"] == "tidings.v1", log
        closes = [e for e in later[:-1] if e["kind"] == "close"]
        assert any(e["code"] == 1006 for e in closes), log  # it was down
        for e in later[:-1]:
            if e["kind"] == "close":
                assert (e["code"], e["clean"]) == (1006, False) or e["code"] == 1012, log
            elif e["kind"] == "closing":
                assert e["code"] == 1012 and e["resume"] == {}, log
        await page.evaluate("window.state.stopped = true")
        await context.close()
    finally:
        stop_all([server])


async def probe(
    page: Any, url: str, protocols: list[str], within: int = 5000, leave: bool = False
) -> dict[str, Any]:
    """One connection from the page; what it got and its close event."""
    found: dict[str, Any] = await asyncio.wait_for(
        page.evaluate(
            "([url, protocols, within, leave]) => window.probe(url, protocols, within, leave)",
            [url, protocols, within, leave],
        ),
        within / 1000 + 5,
    )
    assert not found.get("timeout"), found
    return found


async def said(console: list[str], text: str, within: float = 5) -> None:
    """Wait until a line of the browser's console holds ``text``."""
    end = time.monotonic() + within
    while not any(text in line for line in console):
        if time.monotonic() > end:
            raise AssertionError(f"the console never said {text!r}: {console}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_browser_websocket_sees_each_close_the_gateway_decides_on(
    browser: Any, page_origin: str, tmp_path: Path
) -> None:
    """What Chromium reports to the page for each close: a foreign subprotocol (4000 on
    the wire), bad credentials (1008), none in time (4001), a foreign Origin (403)."""
    keys = [{"name": "ci", "hash": hash_key(KEY), "scopes": ["admin"]}]
    settings = {
        # auth on; the page's origin allowed
        "auth": {
            "TIDINGS_AUTH__API_KEYS": json.dumps(keys),
            "TIDINGS_WS__AUTH_TIMEOUT": "1",
            "TIDINGS_CORS_ORIGINS": json.dumps([page_origin]),
        },
        # no auth; only another origin allowed
        "foreign": {"TIDINGS_CORS_ORIGINS": json.dumps(["https://elsewhere.example"])},
    }
    with concurrent.futures.ThreadPoolExecutor(len(settings)) as pool:
        futures = {
            name: pool.submit(Server, f"sqlite:///{tmp_path / (name + '.db')}", env)
            for name, env in settings.items()
        }
        servers = {name: f.result(60) for name, f in futures.items()}
    try:
        context = await browser.new_context()
        page = await context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await page.goto(page_origin)
        auth, foreign = servers["auth"].ws, servers["foreign"].ws

        # The control: a good key as the second subprotocol, beside tidings.v1, is
        # served (ready); the page then closes it itself, 1000.
        good = await probe(page, auth, ["tidings.v1", "tidings.token." + KEY], leave=True)
        assert good["opened"] and good["protocol"] == "tidings.v1", good
        assert [m["type"] for m in good["messages"]] == ["ready"], good
        assert good["code"] == 1000 and good["clean"], good

        # Only another subprotocol offered. The server selects the client's own offer,
        # only to close at once with 4000: a browser fails a handshake that selects none
        # of its offers (the page would see 1006), so this is how a page learns why.
        other = await probe(page, auth, ["other.v9"])
        assert other["code"] == 4000 and other["reason"] == "offer tidings.v1", other
        assert other["messages"] == [], other
        async with ws_connect(auth, subprotocols=[Subprotocol("other.v9")], open_timeout=5) as raw:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(raw.recv(), 5)
        assert raw.close_code == 4000 and raw.close_reason == "offer tidings.v1"

        # A wrong key as the token subprotocol: accepted with tidings.v1, then closed
        # with 1008 and a reason, before anything is sent (no closing message).
        bad = await probe(page, auth, ["tidings.v1", "tidings.token.not-the-key"])
        assert bad["opened"] and bad["protocol"] == "tidings.v1", bad
        assert bad["code"] == 1008 and bad["clean"] and bad["reason"], bad
        assert bad["messages"] == [], bad

        # No credentials and no auth message within ws.auth_timeout (1 s): a closing
        # message with 4001, then the close event with 4001.
        late = await probe(page, auth, ["tidings.v1"])
        assert late["opened"] and late["code"] == 4001 and late["clean"], late
        assert [m["type"] for m in late["messages"]] == ["closing"], late
        assert late["messages"][0]["code"] == 4001, late

        # A foreign Origin: the server refuses the handshake with HTTP 403, which the
        # page sees only as a failed connection: an error event and close code 1006
        # (the 403 shows in the browser's console, never to the page).
        refused = await probe(page, foreign, ["tidings.v1"])
        assert not refused["opened"] and refused["errored"], refused
        assert refused["code"] == 1006 and not refused["clean"], refused
        await said(console, f"{foreign}' failed: Error during WebSocket handshake: Unexpected")
        assert any(f"{foreign}'" in line and "403" in line for line in console), console
        await context.close()
    finally:
        stop_all(list(servers.values()))
