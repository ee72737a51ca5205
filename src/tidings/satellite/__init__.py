"""Satellites: offline-first replicas that publish locally and sync with a server.

``tidings.satellite.ledger`` is the server's half (pushed transactions decided exactly
once, pulls of a satellite's categories).
"""

from __future__ import annotations

from tidings.satellite.ledger import Ledger

__all__ = ["Ledger"]
