"""The one event-loop thread that runs every sync store's calls, started on first use."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

THREAD_NAME = "tidings-sync-loop"
P = ParamSpec("P")
T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread, and blocking calls into it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def here(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        return threading.get_ident() == self.thread.ident

    def check(self) -> None:
        """Refuse a blocking call that could never return: from the loop's own thread,
        or in a process forked after the loop started."""
        if threading.get_ident() == self.thread.ident:
            raise RuntimeError(
                f"tidings.sync was called from its own event-loop thread ({THREAD_NAME}), "
                "where it would wait for itself forever. Code run by that loop (handlers, "
                "callbacks) must await the async store instead: sync_store.store"
            )
        if os.getpid() != self.pid:
            raise RuntimeError(
                "this tidings.sync store was opened before the process forked and its "
                "event loop does not run here; call tidings.sync.connect again in this process"
            )
        if sys.is_finalizing() or not self.thread.is_alive():
            raise RuntimeError(
                f"the {THREAD_NAME} thread has stopped (the interpreter is shutting down):"
                " tidings.sync calls can no longer run"
            )

    def run(self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kw: P.kwargs) -> T:
        """Run ``fn(*args, **kw)`` on the loop and block until it returns or raises.

        An interruption while waiting (KeyboardInterrupt) cancels the coroutine.
        """
        self.check()
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kw), self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # a no-op once done; cancels the work on an interruption
            raise

    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, Any]], /, *args: P.args, **kw: P.kwargs
    ) -> None:
        """Start ``fn(*args, **kw)`` on the loop without waiting (safe from any thread)."""
        if self.loop.is_closed() or os.getpid() != self.pid:
            return
        coro = fn(*args, **kw)
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop closed meanwhile (interpreter shutdown)
            coro.close()


_lock = threading.Lock()
_current: LoopThread | None = None


def loop_thread() -> LoopThread:
    """The process's loop thread, started on the first call (thread-safe)."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = LoopThread()
            current = _current
    return current


def _forget_after_fork() -> None:
    """In a forked child the loop thread is gone: the next call starts a new one."""
    global _current, _lock
    _current = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
