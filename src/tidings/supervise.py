"""Named, supervised background tasks: a task that dies is logged and restarted, never lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("tidings.tasks")


class Supervisor:
    """Owns a set of named background tasks; restarts any that fails, cancels all on stop.

    ``spawn(name, factory)`` runs ``factory()`` as a task named ``name``. When it
    raises, the error is logged, counted in ``failures`` and, when ``restart`` is true,
    the task starts again after ``restart_delay`` seconds; a task that returns is done.
    """

    def __init__(self, restart_delay: float = 0.5) -> None:
        self.restart_delay = restart_delay
        self.failures: dict[str, int] = {}
        self.last_error: BaseException | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Coroutine[Any, Any, Any]],
        *,
        restart: bool = True,
    ) -> asyncio.Task[Any]:
        """Start ``factory()`` as the task ``name`` (replacing a finished one of that name)."""
        if self._stopping:
            raise RuntimeError(f"cannot start {name}: the supervisor is stopping")
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._guard(name, factory, restart), name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._forget(name, t))
        return task

    def running(self, name: str) -> bool:
        """Whether the task ``name`` is alive."""
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def _guard(
        self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]], restart: bool
    ) -> Any:
        while True:
            try:
                return await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures[name] = self.failures.get(name, 0) + 1
                self.last_error = exc
                if not restart or self._stopping:
                    log.error("task %s failed", name, exc_info=exc)
                    raise
                log.error("task %s failed; restarting it", name, exc_info=exc)
                await asyncio.sleep(self.restart_delay)

    def _forget(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if not task.cancelled() and task.exception() is not None and not self._stopping:
            log.error("task %s stopped with an error", name)

    async def stop(self) -> None:
        """Cancel every task and wait for them to finish."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
