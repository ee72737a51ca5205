"""Satellites: offline-first replicas that publish locally and sync with a server.

``Satellite`` is the client (an event store on a local SQLite file); ``Ledger`` is the
server's half (pushed transactions decided exactly once, pulls of a satellite's
categories), behind ``POST /sync/push`` and ``GET /sync/pull``.
"""

from __future__ import annotations

from tidings.satellite.ledger import Ledger
from tidings.satellite.store import PENDING, Authority, Satellite, file_status
from tidings.satellite.syncer import Conflict, LocalAppend, SatelliteStatus

__all__ = [
    "PENDING",
    "Authority",
    "Conflict",
    "Ledger",
    "LocalAppend",
    "Satellite",
    "SatelliteStatus",
    "file_status",
]
