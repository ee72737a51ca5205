"""A type registry the server tests load by import path (the ``types`` setting)."""

from __future__ import annotations

import dataclasses

import tidings


@dataclasses.dataclass
class Placed:
    """An order placed: its total and currency (version 2 added the currency)."""

    total: int
    currency: str


types = tidings.Types()
types.register(Placed, version=2)
types.rename("OrderCreated", "Placed")
types.upcaster("Placed", 1, 2)(lambda data: {**data, "currency": "EUR"})

not_a_registry = object()
