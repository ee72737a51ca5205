"""The in-memory store: for tests and examples; same behaviour, nothing kept."""

from __future__ import annotations

import time
from typing import NamedTuple
from uuid import UUID, uuid4

from tidings.codec import decode_json
from tidings.events import AppendResult, AuditRecord, Filter, RecordedEvent, StreamInfo
from tidings.store.base import StoreFront
from tidings.store.planner import Group, StoredIdentity, given_ids, plan_batch
from tidings.store.rows import time_from_ms


class _Stored(NamedTuple):
    row: StoredIdentity
    id: UUID
    time_ms: int
    audit: int | None


class MemoryStore(StoreFront):
    """An event store held in this process's memory (``memory://``)."""

    def __init__(self, url: str = "memory://", **options: int) -> None:
        super().__init__(url, **options)
        self._log: list[_Stored] = []  # position p lives at index p - 1
        self._streams: dict[str, list[int]] = {}
        self._ids: dict[UUID, StoredIdentity] = {}
        self._audits: list[AuditRecord] = []
        self._checkpoints: dict[str, int] = {}
        self.identity = str(uuid4())
        self._last_ms = 0

    async def _commit(self, group: Group) -> list[AppendResult]:
        self._check_open()
        versions = {
            a.stream: len(self._streams[a.stream]) - 1
            for a in group.appends
            if a.stream in self._streams
        }
        stored = {i: self._ids[i] for i in given_ids([group]) if i in self._ids}
        plan = plan_batch([group], versions, stored, len(self._log), self._checkpoints)
        outcome = plan.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        self._checkpoints.update(plan.checkpoints)
        if not plan.rows:
            return outcome
        now_ms = max(time.time_ns() // 1_000_000, self._last_ms)
        self._last_ms = now_ms
        audit_id = None
        if group.audit is not None:
            audit_id = len(self._audits) + 1
            self._audits.append(
                AuditRecord(
                    audit_id,
                    group.audit.user,
                    dict(group.audit.extra),
                    time_from_ms(group.created_ms),
                    time_from_ms(now_ms),
                )
            )
        for row in plan.rows:
            identity = StoredIdentity(
                row.stream, row.version, row.position, row.type, row.data, row.metadata
            )
            self._log.append(_Stored(identity, row.id, now_ms, audit_id))
            self._streams.setdefault(row.stream, []).append(row.position)
            self._ids[row.id] = identity
        return outcome

    async def _checkpoint(self, name: str) -> int | None:
        return self._checkpoints.get(name)

    def _event(self, stored: _Stored) -> RecordedEvent:
        row = stored.row
        return RecordedEvent(
            stored.id,
            row.stream,
            row.type,
            decode_json(row.data),
            decode_json(row.metadata),
            row.version,
            row.position,
            time_from_ms(stored.time_ms),
        )

    async def _stream_page(
        self, stream: str, version: int, size: int, backwards: bool
    ) -> list[RecordedEvent]:
        positions = self._streams.get(stream, [])
        if backwards:
            version = min(version, len(positions) - 1)
            chosen = positions[max(0, version - size + 1) : version + 1][::-1]
        else:
            chosen = positions[version : version + size]
        return [self._event(self._log[p - 1]) for p in chosen]

    async def _log_page(
        self, after: int, filter: Filter | None, size: int, raw: bool = False
    ) -> list[RecordedEvent]:
        page: list[RecordedEvent] = []  # raw or not: the values are held decoded
        for stored in self._log[after:]:
            event = self._event(stored)
            if filter is None or filter.matches(event):
                page.append(event)
                if len(page) == size:
                    break
        return page

    async def _streams_page(self, prefix: str | None, after: str, size: int) -> list[StreamInfo]:
        names = sorted(
            n for n in self._streams if n > after and (prefix is None or n.startswith(prefix))
        )
        return [StreamInfo(n, len(self._streams[n]) - 1) for n in names[:size]]

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        self._check_open()
        positions = self._streams.get(stream)
        return None if positions is None else len(positions) - 1

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        self._check_open()
        return len(self._log)

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        self._check_open()
        position = event.position if isinstance(event, RecordedEvent) else event
        if not 1 <= position <= len(self._log):
            return None
        audit_id = self._log[position - 1].audit
        return None if audit_id is None else self._audits[audit_id - 1]

    async def close(self) -> None:
        """Forget nothing (the data lives as long as the object); refuse further use."""
        self._closed = True
        await self._watch.close()
