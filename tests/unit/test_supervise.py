"""The task supervisor: a task that fails is logged and restarted, or surfaces; stop cancels all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidings.supervise import Supervisor


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(restart_delay=0.01)
    runs = 0

    async def flaky() -> str:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"failure {runs}")
        return "done"

    with caplog.at_level(logging.ERROR, logger="tidings.tasks"):
        task = supervisor.spawn("worker", flaky)
        assert task.get_name() == "worker"
        assert await asyncio.wait_for(task, 2) == "done"
    assert runs == 3
    assert supervisor.failures == {"worker": 2}
    assert str(supervisor.last_error) == "failure 2"
    logged = [r for r in caplog.records if r.getMessage() == "task worker failed; restarting it"]
    assert len(logged) == 2 and all(r.exc_info for r in logged)
    assert not supervisor.running("worker")
    await supervisor.stop()


async def test_a_task_that_returns_is_not_restarted() -> None:
    supervisor = Supervisor(restart_delay=0.01)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    await supervisor.spawn("once", once)
    await asyncio.sleep(0.05)
    assert runs == 1 and supervisor.failures == {}
    await supervisor.stop()


async def test_without_restart_the_error_surfaces(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(restart_delay=0.01)

    async def broken() -> None:
        raise ValueError("broken for good")

    with caplog.at_level(logging.ERROR, logger="tidings.tasks"):
        task = supervisor.spawn("broken", broken, restart=False)
        with pytest.raises(ValueError, match="broken for good"):
            await task
    assert supervisor.failures == {"broken": 1}
    assert not supervisor.running("broken")
    messages = [r.getMessage() for r in caplog.records]
    assert "task broken failed" in messages
    assert "task broken stopped with an error" in messages
    await supervisor.stop()


async def test_stop_cancels_every_task_and_refuses_new_ones() -> None:
    supervisor = Supervisor()
    started = asyncio.Event()
    cancelled: list[str] = []

    def forever(name: str) -> asyncio.Task[None]:
        async def run() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(name)
                raise

        return supervisor.spawn(name, run)

    tasks = [forever("a"), forever("b")]
    await started.wait()
    await asyncio.sleep(0)
    assert supervisor.running("a") and supervisor.running("b")
    await supervisor.stop()
    assert sorted(cancelled) == ["a", "b"]
    assert all(t.cancelled() for t in tasks)
    assert not supervisor.running("a") and not supervisor.running("b")
    assert supervisor.failures == {}  # a cancellation is not a failure

    async def late() -> None:
        return None

    with pytest.raises(RuntimeError, match="stopping"):
        supervisor.spawn("late", late)
