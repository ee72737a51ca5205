"""Store methods whose work lives in higher layers (subscriptions, projections).

``store.subscribe(...)`` and friends are spelled on the store, as users expect, but
built in layers above it. Those layers ``provide`` their functions here when
``tidings`` is imported; the store finds them at call time and never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidings.errors import ConfigurationError

_provided: dict[str, Callable[..., Any]] = {}


def provide(name: str, function: Callable[..., Any]) -> None:
    """Make ``function`` the store method ``name`` (called with the store first)."""
    _provided[name] = function


def feature(name: str) -> Callable[..., Any]:
    """The function behind the store method ``name``."""
    try:
        return _provided[name]
    except KeyError:
        raise ConfigurationError(
            f"store.{name} is provided by a tidings layer that was not imported: import tidings"
        ) from None
