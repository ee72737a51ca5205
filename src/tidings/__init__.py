"""tidings: a durable event store with subscriptions, live fan-out and delivery.

Open a store by URL, append and read events, and follow the log live::

    store = await tidings.connect("sqlite:///events.db")
    async with store:
        await store.append("order-42", [tidings.NewEvent("Placed", {"total": 10})])
"""

from __future__ import annotations

from typing import Any

from tidings import notify, views
from tidings.aggregates import Fold, Projected
from tidings.backup import BackupInfo, RestoreInfo, restore
from tidings.batcher import Batcher
from tidings.errors import (
    BackupError,
    BatcherClosed,
    CheckpointConflict,
    ConfigurationError,
    DuplicateEventId,
    EventDecodeError,
    InvalidChannel,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidHubKey,
    InvalidHubPayload,
    InvalidHubValue,
    InvalidInput,
    MissingOutput,
    NotifierClosed,
    NotifierUnavailable,
    Offline,
    PayloadTooLarge,
    SnapshotError,
    StoreChanged,
    StoreClosed,
    StoreUnavailable,
    SubscriptionOverflow,
    TidingsError,
    TypeRegistryError,
    UnregisteredType,
    ViewClosed,
    ViewError,
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
from tidings.hub import Consumer, Hub, HubEvent, HubStats
from tidings.notify import Message, Notice, Notifier
from tidings.outbox import Outbox, Relay, RelayStats
from tidings.projections import ReadModel
from tidings.store import EventStore, Transaction
from tidings.subscriptions import ParkedEvent, Retry, Subscription, SubscriptionInfo
from tidings.types import Types
from tidings.views import Change, View
from tidings.wiring import connect

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> Any:
    if name == "Satellite":  # the HTTP client (aiohttp) is imported only when asked for
        from tidings.satellite import Satellite

        return Satellite
    raise AttributeError(f"module 'tidings' has no attribute {name!r}")


__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "Audit",
    "AuditRecord",
    "BackupError",
    "BackupInfo",
    "Batcher",
    "BatcherClosed",
    "Change",
    "CheckpointConflict",
    "ConfigurationError",
    "Consumer",
    "DuplicateEventId",
    "EventDecodeError",
    "EventStore",
    "Expected",
    "ExpectedVersion",
    "Filter",
    "Fold",
    "Hub",
    "HubEvent",
    "HubStats",
    "InvalidChannel",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidHubKey",
    "InvalidHubPayload",
    "InvalidHubValue",
    "InvalidInput",
    "Message",
    "MissingOutput",
    "NewEvent",
    "Notice",
    "Notifier",
    "NotifierClosed",
    "NotifierUnavailable",
    "Offline",
    "Outbox",
    "ParkedEvent",
    "PayloadTooLarge",
    "Projected",
    "ReadModel",
    "RecordedEvent",
    "Relay",
    "RelayStats",
    "RestoreInfo",
    "Retry",
    "Satellite",
    "SnapshotError",
    "StoreChanged",
    "StoreClosed",
    "StoreUnavailable",
    "StreamInfo",
    "Subscription",
    "SubscriptionInfo",
    "SubscriptionOverflow",
    "TidingsError",
    "Transaction",
    "TypeRegistryError",
    "Types",
    "UnregisteredType",
    "View",
    "ViewClosed",
    "ViewError",
    "WrongExpectedVersion",
    "__version__",
    "connect",
    "notify",
    "restore",
    "views",
]
