"""Pull consumers, and their consumer groups, held beside an in-memory store.

For tests and examples, as the rest of the memory store: what the database backends
keep in tables (``pullstore``, ``groupstore``) is kept in dicts that live as long as
the store object. Nothing here awaits between a check and a write, so each call is
atomic; leases run on the event loop's monotonic clock.
"""

from __future__ import annotations

import time
from typing import Any

from tidings.errors import InvalidInput
from tidings.subscriptions.checkpoints import MemoryCheckpoints, Work
from tidings.subscriptions.groupstore import Rebalance, share
from tidings.subscriptions.pulldefs import PullRow


class MemoryGroups:
    """Consumer group partitions (checkpoint, owner, lease end) and members (last seen),
    as ``groupstore.GroupStore``."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[int, list[Any]]] = {}
        self._members: dict[str, dict[str, float]] = {}

    async def ensure(self, name: str, partitions: int, start: int) -> None:  # noqa: D102
        parts = self._parts.setdefault(name, {})
        if not parts:
            parts.update({p: [start, None, 0.0] for p in range(partitions)})
        if len(parts) != partitions:
            raise InvalidInput(
                f"consumer group {name!r} has {len(parts)} partitions, not {partitions}"
            )

    async def partitions(self, name: str) -> int:  # noqa: D102
        return len(self._parts.get(name, {}))

    async def beat(  # noqa: D102
        self, name: str, member: str, ttl: float, partitions: int, rebalance: Rebalance
    ) -> dict[int, int]:
        now = time.monotonic()
        members = self._members.setdefault(name, {})
        members[member] = now
        for other, seen in list(members.items()):
            if seen < now - ttl:
                del members[other]
        target = share(partitions, len(members))
        parts = self._parts.get(name, {})
        held = {p: int(row[0]) for p, row in parts.items() if row[1] == member}
        for p in held:
            parts[p][2] = now + ttl
        gone = rebalance(held, target)
        for p in gone:
            parts[p][1:] = [None, 0.0]
        wanted = target - (len(held) - len(gone))
        taken: dict[int, int] = {}
        for p, row in sorted(parts.items()):
            if len(taken) >= wanted:
                break
            if row[1] is None or row[2] < now:
                row[1:] = [member, now + ttl]
                taken[p] = int(row[0])
        return taken

    async def move(  # noqa: D102
        self, name: str, partition: int, old: int, new: int, member: str, work: Work | None
    ) -> bool:
        row = self._parts.get(name, {}).get(partition)

        def fenced() -> bool:
            return row is not None and (row[0], row[1]) == (old, member)

        if not fenced() or row is None or row[2] <= time.monotonic():
            return False
        if work is not None:
            await work(None)
            if not fenced():
                return False
        row[0] = new
        return True

    async def leave(self, name: str, member: str) -> None:  # noqa: D102
        self._members.get(name, {}).pop(member, None)
        for row in self._parts.get(name, {}).values():
            if row[1] == member:
                row[1:] = [None, 0.0]

    async def reset(self, name: str, position: int) -> None:  # noqa: D102
        for row in self._parts.get(name, {}).values():
            row[0] = position

    def state(self, name: str) -> tuple[int | None, int]:
        """The lowest partition checkpoint (None: no partitions) and the member count."""
        parts = self._parts.get(name, {})
        low = min((int(row[0]) for row in parts.values()), default=None)
        return low, len(self._members.get(name, {}))

    def forget(self, name: str) -> None:
        """Remove the group ``name``."""
        self._parts.pop(name, None)
        self._members.pop(name, None)

    async def close(self) -> None:  # noqa: D102
        return None


class MemoryPull:
    """Pull consumer definitions and hand-outs beside an in-memory store, as
    ``pullstore.PullStore``."""

    def __init__(self, checkpoints: MemoryCheckpoints) -> None:
        self._checkpoints = checkpoints
        self.groups = MemoryGroups()
        self._rows: dict[str, PullRow] = {}
        self._handed: dict[str, dict[int, tuple[str, int]]] = {}

    async def create(self, name: str, definition: str, start: int) -> bool:  # noqa: D102
        if name in self._rows:
            return False
        self._rows[name] = PullRow(definition, start, False)
        await self._checkpoints.ensure(name, start)
        return True

    async def load(self, name: str) -> PullRow | None:  # noqa: D102
        return self._rows.get(name)

    async def rows(self) -> list[tuple[str, PullRow]]:  # noqa: D102
        return sorted(self._rows.items())

    async def hand_out(self, name: str, position: int) -> None:  # noqa: D102
        row = self._rows.get(name)
        if row is not None and row.handed < position:
            self._rows[name] = row._replace(handed=position)

    async def ack(self, name: str, position: int) -> bool:  # noqa: D102
        row = self._rows.get(name)
        checkpoint = await self._checkpoints.load(name)
        if row is None or checkpoint is None or not checkpoint < position <= row.handed:
            return False
        return await self._checkpoints.advance(name, checkpoint, position, None)

    async def mark_grouped(self, name: str) -> None:  # noqa: D102
        row = self._rows.get(name)
        if row is not None:
            self._rows[name] = row._replace(grouped=True)

    async def handed_to(self, name: str, member: str) -> dict[int, int]:  # noqa: D102
        found = self._handed.get(name, {}).items()
        return {p: position for p, (m, position) in found if m == member}

    async def hand_out_partitions(  # noqa: D102
        self, name: str, member: str, partitions: list[int], position: int
    ) -> None:
        handed = self._handed.setdefault(name, {})
        for p in partitions:
            before = handed.get(p)
            mine = before is not None and before[0] == member
            handed[p] = (member, max(position, before[1]) if mine and before else position)

    async def group_state(self, name: str) -> tuple[int | None, int]:  # noqa: D102
        return self.groups.state(name)

    async def reset(self, name: str, position: int) -> None:  # noqa: D102
        row = self._rows.get(name)
        if row is not None:
            self._rows[name] = row._replace(handed=position)
        self._handed.pop(name, None)
        await self._checkpoints.reset(name, position)
        await self.groups.reset(name, position)

    async def delete(self, name: str) -> bool:  # noqa: D102
        if self._rows.pop(name, None) is None:
            return False
        self._handed.pop(name, None)
        self._checkpoints.forget(name)
        self.groups.forget(name)
        return True
