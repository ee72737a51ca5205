"""tidings: a durable event store with subscriptions, live fan-out and delivery.

Open a store by URL and append and read events::

    store = await tidings.connect("sqlite:///events.db")
    async with store:
        await store.append("order-42", [tidings.NewEvent("Placed", {"total": 10})])
"""

from __future__ import annotations

from tidings.errors import (
    ConfigurationError,
    DuplicateEventId,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidInput,
    StoreClosed,
    StoreUnavailable,
    TidingsError,
    WrongExpectedVersion,
)
from tidings.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Audit,
    AuditRecord,
    Expected,
    ExpectedVersion,
    Filter,
    NewEvent,
    RecordedEvent,
    StreamInfo,
)
from tidings.store import EventStore, Transaction
from tidings.wiring import connect

__version__ = "0.1.0.dev0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "Audit",
    "AuditRecord",
    "ConfigurationError",
    "DuplicateEventId",
    "EventStore",
    "Expected",
    "ExpectedVersion",
    "Filter",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidInput",
    "NewEvent",
    "RecordedEvent",
    "StoreClosed",
    "StoreUnavailable",
    "StreamInfo",
    "TidingsError",
    "Transaction",
    "WrongExpectedVersion",
    "__version__",
    "connect",
]
