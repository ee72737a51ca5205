"""Writes beside the log on a SQLite store: checkpoints, leases, snapshots, view rows.

SQLite has one write lock per file. A second connection of the same process that
takes it makes the store's writer thread wait in SQLite's busy handler, which
sleeps in steps of up to 100 ms: measured as a p99 of 150 ms to 1 s from append to
handler. So these writes go where the lock is not fought over:

- a short write (``SideWrites.write``) runs at once on the event loop's thread when the
  lock is free (a checkpoint move takes tens of microseconds, less than handing it
  to a thread), and otherwise joins the writer thread's queue, between two append
  batches, with no sleeping;
- a write that awaits (``SideWrites.transaction``: a handler writing beside its
  checkpoint) borrows the writer thread's connection: the writer opens the
  transaction, lends the connection to the event loop, and commits when it is
  given back. Appends wait in the queue meanwhile, as they would for the lock.

Side writes commit with ``synchronous=NORMAL``: a power loss can take back the last
ones (checkpoint moves with their handlers' writes, which are then repeated), never
an acknowledged event.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from tidings.errors import InvalidInput, StoreUnavailable

T = TypeVar("T")
SIDE_SYNCHRONOUS = "NORMAL"

_FIRST_PAUSE = 0.0002
_MAX_PAUSE = 0.002


def begin_immediate(conn: sqlite3.Connection, timeout: float) -> None:
    """``BEGIN IMMEDIATE``, retrying every 0.2 to 2 ms while another process holds the
    write lock, for up to ``timeout`` seconds (then SQLite's "database is locked").

    For a connection with ``busy_timeout = 0``, on a thread that may block. SQLite's
    own busy handler sleeps 1, 2, 5, ... up to 100 ms at a time: against a process
    that commits a thousand times a second it keeps waking to a taken lock (measured:
    a p99 of 700 ms from append to handler with the two in separate processes).
    """
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock (SQLITE_BUSY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "locked" in str(exc) or "busy" in str(exc)


lending: ContextVar[bool] = ContextVar("tidings_sqlite_lending", default=False)
"""True inside ``SideWrites.transaction``: an append there would wait for itself."""


class Job(Generic[T]):
    """A short write for the writer thread: ``fn(conn)`` in a transaction of its own."""

    __slots__ = ("done", "fn")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], loop: asyncio.AbstractEventLoop):
        self.fn = fn
        self.done: asyncio.Future[T] = loop.create_future()


class Lease:
    """The writer thread's connection, lent to the event loop for one transaction."""

    __slots__ = ("commit", "done", "granted", "returned")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.granted: asyncio.Future[sqlite3.Connection] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.returned = threading.Event()
        self.commit = False

    def give_back(self, commit: bool) -> None:
        """Hand the connection back: the writer commits (or rolls back) and goes on."""
        self.commit = commit
        self.returned.set()


def run_side(
    conn: sqlite3.Connection, item: Job[Any] | Lease, loop: Any, url: str, timeout: float
) -> None:
    """On the writer thread: run a job or lend the connection, in a NORMAL transaction
    (waiting up to ``timeout`` seconds for another process's write lock)."""
    outcome: Any = None
    failed: BaseException | None = None
    restore = conn.execute("PRAGMA synchronous").fetchone()[0]
    try:
        conn.execute(f"PRAGMA synchronous = {SIDE_SYNCHRONOUS}")
        begin_immediate(conn, timeout)
        try:
            if isinstance(item, Lease):
                if not _post(loop, _grant, item, conn):
                    item.returned.set()  # nobody is left to use it
                item.returned.wait()
                commit = item.commit
            else:
                outcome, commit = item.fn(conn), True
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT" if commit else "ROLLBACK")
    except sqlite3.Error as exc:
        failed = StoreUnavailable(url, f"write failed: {exc}")
        failed.__cause__ = exc
    except Exception as exc:
        failed = exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"PRAGMA synchronous = {restore}")
    if isinstance(item, Lease):
        _post(loop, _refuse, item.granted, failed)  # when it was never granted
    _post(loop, _settle, item.done, outcome, failed)


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody waits
        return False
    return True


def _grant(lease: Lease, conn: sqlite3.Connection) -> None:
    if lease.granted.done():  # the borrower gave up waiting
        lease.give_back(False)
    else:
        lease.granted.set_result(conn)


def _refuse(future: asyncio.Future[Any], error: BaseException | None) -> None:
    if not future.done():
        future.set_exception(error or StoreUnavailable("sqlite", "the writer stopped"))


def _settle(future: asyncio.Future[Any], outcome: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)


class SideWrites:
    """Side writes of one SQLite store (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        connect: Callable[[], sqlite3.Connection],
        submit: Callable[[Job[Any] | Lease], None],
        check_open: Callable[[], None],
    ) -> None:
        self._url = url
        self._check_open = check_open
        self._connect = connect
        self._submit = submit
        self._inline: sqlite3.Connection | None = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a write transaction of its own and return what it returns;
        ``fn`` is quick and does not await (it may raise to roll back)."""
        self._check_open()
        done = self._try_inline(fn)
        if done is not None:
            return done[0]
        job = Job(fn, asyncio.get_running_loop())
        self._submit(job)
        return await job.done

    def _try_inline(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[T] | None:
        if lending.get():
            raise InvalidInput("a side write inside a SQLite side transaction would wait for it")
        try:
            if self._inline is None:
                self._inline = self._connect()
                self._inline.execute(f"PRAGMA synchronous = {SIDE_SYNCHRONOUS}")
                self._inline.execute("PRAGMA busy_timeout = 0")
            self._inline.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None  # the lock is taken: the writer thread waits for it, not the loop
            raise StoreUnavailable(self._url, str(exc)) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(self._url, str(exc)) from exc
        try:
            result = fn(self._inline)
        except BaseException:
            self._inline.execute("ROLLBACK")
            raise
        try:
            self._inline.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._inline.execute("ROLLBACK")
            raise StoreUnavailable(self._url, f"write failed: {exc}") from exc
        return (result,)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[sqlite3.Connection]:
        """Borrow the writer's connection inside a write transaction, for work that
        awaits; commits when the block ends, rolls back if it raises. Appending to the
        store inside the block raises ``InvalidInput`` (it would wait for the block)."""
        self._check_open()
        if lending.get():
            raise InvalidInput("a SQLite side transaction cannot be nested")
        lease = Lease(asyncio.get_running_loop())
        self._submit(lease)
        try:
            conn = await lease.granted
        except BaseException:
            lease.give_back(False)  # if it is granted later, it is handed straight back
            raise
        token = lending.set(True)
        try:
            yield conn
        except BaseException:
            lease.give_back(False)
            raise
        else:
            lease.give_back(True)
            await lease.done  # the commit's own error, if any
        finally:
            lending.reset(token)

    def close(self) -> None:
        """Close the inline connection."""
        if self._inline is not None:
            self._inline.close()
            self._inline = None
