"""``tidings.connect``: a store by URL, with the notifier that wakes its live readers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tidings.client import open_remote
from tidings.errors import ConfigurationError
from tidings.notify import connect as connect_notifier
from tidings.notify.base import NotifierBase
from tidings.notify.heads import NotifierHeads
from tidings.store import StoreFront
from tidings.store import connect as connect_store

AUTO = "auto"


async def connect(
    url: str, *, notify: str | NotifierBase | None = AUTO, **options: Any
) -> StoreFront:
    """Open the store at ``url`` and wire a notifier to it for live reads.

    ``http://`` and ``https://`` URLs open the remote store of a tidings server
    (``token=`` for auth); its server's notifier wakes its live reads.

    ``notify`` is a notifier URL (``redis://...``, ``nats://...``, ``postgresql://...``),
    an open notifier (left open on close), ``None`` (only this process's commits wake
    readers at once; other processes' are seen by polling), or ``"auto"``: LISTEN/NOTIFY
    on the same database for PostgreSQL, none for SQLite and memory. ``types`` (a
    ``tidings.Types``) names and versions appends and renames and upcasts reads, on
    every URL (``store.types``). Other options are the store's (see
    ``tidings.store.connect``).
    """
    if urlsplit(url).scheme in ("http", "https") if isinstance(url, str) else False:
        remote: StoreFront = await open_remote(url, **options)
        return remote  # the server's own notifier wakes its live readers
    store = await connect_store(url, **options)
    try:
        notifier, owned = await _notifier_for(url, notify)
        if notifier is not None:
            feed = NotifierHeads(notifier, store.head_channel, owned=owned)
            try:
                await store.attach_feed(feed)
            except BaseException:
                if owned:
                    await notifier.close()
                raise
    except BaseException:
        await store.close()
        raise
    return store


async def _notifier_for(
    url: str, notify: str | NotifierBase | None
) -> tuple[NotifierBase | None, bool]:
    if notify is None:
        return None, False
    if isinstance(notify, NotifierBase):
        return notify, False
    if not isinstance(notify, str):
        raise ConfigurationError(
            f"notify must be a notifier URL, a notifier, 'auto' or None, not {notify!r}"
        )
    if notify == AUTO:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            return None, False
        notify = parts._replace(query="").geturl()  # the store's options are not the driver's
    return await connect_notifier(notify), True
