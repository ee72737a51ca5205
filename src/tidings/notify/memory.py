"""The in-process notifier: notifiers opened on the same ``memory://name`` URL share a bus."""

from __future__ import annotations

import weakref
from urllib.parse import urlsplit

from tidings.notify.base import Notice, NotifierBase

DEFAULT_MAX_PAYLOAD = 1 << 20
_buses: weakref.WeakValueDictionary[str, _Bus] = weakref.WeakValueDictionary()


class _Bus:
    """The notifiers of one name in this process."""

    def __init__(self) -> None:
        self.members: set[MemoryNotifier] = set()


class MemoryNotifier(NotifierBase):
    """Pub/sub inside one process, for tests, examples and single-process apps.

    ``publish`` returns once the message sits in every subscriber's queue. Notifiers
    opened on the same URL (``memory://`` or ``memory://name``) reach each other.
    """

    kind = "memory"

    def __init__(self, url: str = "memory://", max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        super().__init__(url, max_payload)
        parts = urlsplit(url)
        name = parts.netloc + parts.path
        bus = _buses.get(name)
        if bus is None:
            bus = _buses[name] = _Bus()
        self._bus = bus
        bus.members.add(self)
        self.connects = 1

    async def _send(self, channel: str, payload: bytes) -> None:
        for member in tuple(self._bus.members):
            member._deliver(channel, payload)

    async def _listen(self, channels: list[str]) -> None:
        for channel in channels:
            self._announce(Notice("subscribe", topic=channel), channel)

    async def _unlisten(self, channels: list[str]) -> None:
        return None

    async def _shutdown(self) -> None:
        self._bus.members.discard(self)
