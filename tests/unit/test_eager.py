"""Eager starts: a coroutine runs in the caller's step until it waits, then in a task."""

from __future__ import annotations

import asyncio

import pytest

from tidings.server.ws import eager


async def test_a_coroutine_that_never_waits_finishes_in_the_callers_step() -> None:
    done: list[str] = []

    async def write() -> None:
        done.append("sent")

    assert eager.start(write()) is None
    assert done == ["sent"]  # before any other task ran


async def test_a_coroutine_that_waits_is_finished_by_a_task_with_each_result() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[object] = []

    async def write() -> None:
        seen.append("first")
        seen.append(await gate)
        await asyncio.sleep(0)  # a bare yield
        seen.append(await asyncio.sleep(0.01, "slept"))

    task = eager.start(write(), "writer")
    assert task is not None and task.get_name() == "writer"
    assert seen == ["first"]
    gate.set_result(7)
    await task
    assert seen == ["first", 7, "slept"]


async def test_an_error_before_the_first_wait_reaches_the_caller() -> None:
    async def write() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        eager.start(write())


async def test_an_error_of_what_it_waited_for_is_raised_inside_the_coroutine() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    caught: list[BaseException] = []

    async def write() -> None:
        try:
            await gate
        except OSError as exc:
            caught.append(exc)
            raise

    task = eager.start(write())
    assert task is not None
    gate.set_exception(OSError("broken pipe"))
    with pytest.raises(OSError):
        await task
    assert len(caught) == 1


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def write() -> None:
        try:
            await gate
        finally:
            cleaned.append("finally")

    task = eager.start(write())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]
    assert gate.cancelled()
