"""State views: the latest value per key of a category, queryable and watchable.

view = tidings.views.View(store, "profiles", category="profile")   # evt's new/mod/del
async with view:                                  # folds the log in the background
    result = await store.append("profile-42", [NewEvent("new", {"name": "Ada"})])
    values = await view.get(["42"], at_least=result.position)   # read-your-writes
    async for change in view.watch(["42"]):       # current values, then every change
        print(change.key, change.value, change.position)       # value None: deleted

A view is folded by the durable subscription ``view:<name>``, whose handler writes the
view's rows in the same transaction that moves its checkpoint: the rows and the
position they are folded up to always agree (ADR 8).
"""

from __future__ import annotations

from tidings.views.fold import EVT_TYPES, Reducer, evt_reduce
from tidings.views.view import DEFAULT_ON_ERROR, View
from tidings.views.watch import Change, Watch

__all__ = ["DEFAULT_ON_ERROR", "EVT_TYPES", "Change", "Reducer", "View", "Watch", "evt_reduce"]
