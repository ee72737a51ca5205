"""The curated public API: what ``tidings`` exports is what users may rely on."""

from __future__ import annotations

import tidings

EXPECTED = {
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
    # live fan-out
    "notify",
    "Notifier",
    "Message",
    "Notice",
    "Hub",
    "HubEvent",
    "HubStats",
    "Consumer",
    "Outbox",
    "Relay",
    "RelayStats",
    "Batcher",
    "InvalidChannel",
    "PayloadTooLarge",
    "NotifierUnavailable",
    "NotifierClosed",
    "SubscriptionOverflow",
    "InvalidHubKey",
    "InvalidHubValue",
    "InvalidHubPayload",
    "MissingOutput",
    "BatcherClosed",
    "CheckpointConflict",
    "StoreChanged",
    # subscriptions, projections, aggregates
    "Subscription",
    "SubscriptionInfo",
    "ParkedEvent",
    "Retry",
    "Fold",
    "Projected",
    "SnapshotError",
    "ReadModel",
    # state views
    "views",
    "View",
    "Change",
    "ViewError",
    "ViewClosed",
    # typed events
    "Types",
    "TypeRegistryError",
    "UnregisteredType",
    "EventDecodeError",
    # backup and restore
    "BackupError",
    "BackupInfo",
    "RestoreInfo",
    "restore",
    # satellites
    "Satellite",
    "Offline",
}


def test_exported_members_are_the_curated_set() -> None:
    assert set(tidings.__all__) == EXPECTED
    assert all(hasattr(tidings, name) for name in tidings.__all__)


def test_every_backend_satisfies_the_store_protocol() -> None:
    from tidings.satellite import Satellite
    from tidings.store.memory import MemoryStore
    from tidings.store.postgres import PostgresStore
    from tidings.store.sqlite import SQLiteStore

    for cls in (MemoryStore, SQLiteStore, PostgresStore, Satellite):
        for name in (
            "append",
            "transaction",
            "read_stream",
            "read_all",
            "stream_version",
            "head",
            "list_streams",
            "audit",
            "close",
            "wait_for",
            "subscribe",
            "subscriptions",
            "reset_subscription",
            "project",
            "execute",
            "backup",
        ):
            assert callable(getattr(cls, name)), f"{cls.__name__} lacks {name}"


def test_every_notifier_backend_satisfies_the_notifier_protocol() -> None:
    from tidings.notify.memory import MemoryNotifier
    from tidings.notify.nats import NatsNotifier
    from tidings.notify.postgres import PostgresNotifier
    from tidings.notify.redis import RedisNotifier

    for cls in (MemoryNotifier, PostgresNotifier, RedisNotifier, NatsNotifier):
        for name in ("publish", "subscribe", "close", "__aenter__", "__aexit__"):
            assert callable(getattr(cls, name)), f"{cls.__name__} lacks {name}"
