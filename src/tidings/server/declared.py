"""What the server's settings declare by import path: state views, a type registry."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, Field

from tidings.errors import ConfigurationError
from tidings.types import Types
from tidings.views import View


class ViewSettings(BaseModel):
    """A state view the server folds: its name, category, and how events fold."""

    name: str
    category: str
    reducer: str | None = Field(
        default=None,
        description="import path of reducer(current, event) -> value ('pkg.module:func'); "
        "none: evt's new/mod/del",
    )


def _imported(path: str, what: str) -> Any:
    """The object at ``pkg.module:name``; ConfigurationError naming ``what`` if none."""
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"{what} {path!r} cannot be imported: {exc}") from exc


def load_reducer(path: str) -> Any:
    """The function at ``pkg.module:name``; ConfigurationError when there is none."""
    found = _imported(path, "view reducer")
    if not callable(found):
        raise ConfigurationError(f"view reducer {path!r} is not callable")
    return found


def load_types(path: str) -> Types:
    """The ``tidings.Types`` at ``pkg.module:name``, checked; ConfigurationError if none."""
    found = _imported(path, "types")
    if not isinstance(found, Types):
        raise ConfigurationError(f"types {path!r} is a {type(found).__name__}, not a tidings.Types")
    found.check()
    return found


def open_views(store: Any, declared: list[ViewSettings]) -> dict[str, View]:
    """The configured views on ``store`` (not started)."""
    views: dict[str, View] = {}
    for item in declared:
        if item.name in views:
            raise ConfigurationError(f"view {item.name!r} is declared twice")
        reducer = None if item.reducer is None else load_reducer(item.reducer)
        views[item.name] = View(store, item.name, category=item.category, reducer=reducer)
    return views
