"""Helpers for users' own tests: the in-memory store as a test double."""

from __future__ import annotations

from tidings.store.memory import MemoryStore

__all__ = ["MemoryStore", "memory_store"]


def memory_store(**options: int) -> MemoryStore:
    """A fresh in-memory store, ready to use without ``await tidings.connect``."""
    return MemoryStore("memory://", **options)
