"""A TCP proxy for fault tests: cut connections, go silent (half-open), refuse new ones.

Run it in the test's event loop::

    async with TcpProxy("127.0.0.1", 6379) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.cut()          # reset every current connection (RST)
        proxy.refuse(True)   # the server is "down": new connections are reset at once
        proxy.pause()        # current connections stop carrying bytes, without closing
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Self

_LINGER_ZERO = struct.pack("ii", 1, 0)  # close() then sends RST instead of FIN


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection abruptly: SO_LINGER 0, so the peer gets a reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


class _Link:
    """One proxied connection: the client's side, the server's side, and a gate."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.flowing = asyncio.Event()
        self.flowing.set()

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.server)
        self.flowing.set()  # let a paused pump run into the closed transport and end


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``host``:``target_port``, with faults on demand."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self._refusing = False
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Self:
        """Listen on an ephemeral port of 127.0.0.1 (``port`` tells which)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        """Connections being proxied right now."""
        return len(self._links)

    def cut(self) -> None:
        """Reset every current connection, both sides."""
        for link in list(self._links):
            link.reset()

    def pause(self) -> None:
        """Stop carrying bytes on the current connections, leaving them open (half-open).

        Connections made later are not paused.
        """
        for link in self._links:
            link.flowing.clear()

    def resume(self) -> None:
        """Carry bytes again on paused connections (nothing held back is lost)."""
        for link in self._links:
            link.flowing.set()

    def refuse(self, on: bool = True) -> None:
        """While on, reset each new connection at once: the server looks down."""
        self._refusing = on

    async def close(self) -> None:
        """Stop listening, reset every connection and wait for the forwarding tasks."""
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._refusing:
                self.refused += 1
                _reset(writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                _reset(writer)
                return
            self.accepted += 1
            link = _Link(writer, up_writer)
            self._links.add(link)
            try:
                await asyncio.gather(
                    self._pump(link, reader, up_writer), self._pump(link, up_reader, writer)
                )
            finally:
                self._links.discard(link)
                link.reset()
        finally:
            self._handlers.discard(task)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                await link.flowing.wait()
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        # One side ended: end the whole connection, as a real server or client would.
        link.reset()
