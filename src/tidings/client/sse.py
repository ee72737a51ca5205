"""An incremental Server-Sent Events parser (the WHATWG event-stream rules)."""

from __future__ import annotations


class SSEParser:
    """Feed bytes as they arrive; get back ``(event type, data)`` per complete event.

    ``last_id`` follows every ``id:`` field of a whole event (up to its blank line, as a
    browser's last event ID), including events with no data (tidings sends those to
    move a reader's cursor past filtered-out stretches): a block cut off by a broken
    connection moves nothing. ``retry`` is the last ``retry:`` value in milliseconds.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Parse ``chunk``; return the events it completed, in order."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.decode("utf-8", "replace").removesuffix("\r")
            if not line:
                self.last_id = self._id
                if self._data:
                    events.append((self._event or "message", "\n".join(self._data)))
                self._data = []
                self._event = ""
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\x00" not in value:
                self._id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        return events
