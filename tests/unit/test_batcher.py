"""The batcher: concurrent callers coalesced into few bulk calls, each answered on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Mapping

import pytest

from tidings.batcher import Batcher
from tidings.errors import BatcherClosed, InvalidInput, MissingOutput, TidingsError


class Recorder:
    """A batch function that records its calls: squares, or what a test makes it do."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay
        self.fail_on: int | None = None
        self.leave_out: set[int] = set()
        self.running = 0
        self.most_running = 0

    async def __call__(self, inputs: list[int]) -> dict[int, int]:
        self.calls.append(list(inputs))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if self.fail_on is not None and self.fail_on in inputs:
            raise ValueError(f"no answer for {self.fail_on}")
        return {i: i * i for i in inputs if i not in self.leave_out}


async def test_concurrent_callers_share_few_calls_and_each_gets_its_own_outputs() -> None:
    fn = Recorder()
    batcher: Batcher[int, int] = Batcher(fn, max_size=100, max_delay=0.01)
    requests = [[i, i + 1000, i] for i in range(50)]
    results = await asyncio.gather(*(batcher.do(r) for r in requests))
    assert results == [[i * i for i in r] for r in requests]
    assert len(fn.calls) == 1
    assert sorted(fn.calls[0]) == sorted({i for r in requests for i in r})
    await batcher.close()


async def test_inputs_waiting_together_are_sent_once() -> None:
    fn = Recorder()
    batcher: Batcher[int, int] = Batcher(fn, max_size=10, max_delay=0.01)
    results = await asyncio.gather(batcher.do([1, 2, 2]), batcher.do([2, 3, 1]))
    assert list(results) == [[1, 4, 4], [4, 9, 1]]
    assert fn.calls == [[1, 2, 3]]
    await batcher.close()


async def test_no_call_holds_more_than_max_size_inputs_and_a_full_batch_goes_at_once() -> None:
    fn = Recorder()
    batcher: Batcher[int, int] = Batcher(fn, max_size=7, max_delay=10.0)
    started = time.monotonic()
    results = await asyncio.gather(*(batcher.do([i]) for i in range(21)))
    assert time.monotonic() - started < 1.0  # full batches never wait for max_delay
    assert results == [[i * i] for i in range(21)]
    assert [len(c) for c in fn.calls] == [7, 7, 7]
    big = await asyncio.wait_for(batcher.do(list(range(100, 121))), 1.0)  # one caller, 3 calls
    assert big == [i * i for i in range(100, 121)]
    assert all(len(c) <= 7 for c in fn.calls) and len(fn.calls) == 6
    await batcher.close()


async def test_a_partial_batch_goes_after_max_delay() -> None:
    fn = Recorder()
    batcher: Batcher[int, int] = Batcher(fn, max_size=100, max_delay=0.05)
    started = time.monotonic()
    first = asyncio.create_task(batcher.do([1]))
    await asyncio.sleep(0.02)
    second = asyncio.create_task(batcher.do([2]))
    assert await first == [1] and await second == [4]
    elapsed = time.monotonic() - started
    assert 0.045 <= elapsed < 0.5  # timed from the first waiting input, not the last
    assert fn.calls == [[1, 2]]
    no_delay: Batcher[int, int] = Batcher(fn, max_delay=0)
    assert await no_delay.do([3]) == [9]
    await batcher.close()
    await no_delay.close()


async def test_a_failed_call_fails_every_caller_with_inputs_in_it_and_no_other() -> None:
    fn = Recorder()
    fn.fail_on = 13
    batcher: Batcher[int, int] = Batcher(fn, max_size=3, max_delay=0.01)
    a = asyncio.create_task(batcher.do([11, 12]))
    b = asyncio.create_task(batcher.do([13, 21]))  # 13 lands in the first call, 21 in the next
    c = asyncio.create_task(batcher.do([22]))
    results = await asyncio.gather(a, b, c, return_exceptions=True)
    assert fn.calls == [[11, 12, 13], [21, 22]]
    assert isinstance(results[0], ValueError) and results[0] is results[1]
    assert results[2] == [484]
    assert batcher.failed_calls == 1 and batcher.calls == 2
    await batcher.close()


async def test_an_output_left_out_fails_only_the_callers_that_asked_for_it() -> None:
    fn = Recorder()
    fn.leave_out = {5}
    batcher: Batcher[int, int] = Batcher(fn, max_size=10, max_delay=0.01)
    a = asyncio.create_task(batcher.do([4, 5]))
    b = asyncio.create_task(batcher.do([4, 6]))
    with pytest.raises(MissingOutput) as caught:
        await a
    assert caught.value.input == 5
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, TidingsError)
    assert "5" in str(caught.value)
    assert await b == [16, 36]
    await batcher.close()


async def test_a_result_that_is_not_a_mapping_fails_the_callers() -> None:
    async def broken(inputs: list[int]) -> Mapping[int, int]:
        return [1, 2]  # type: ignore[return-value]

    batcher: Batcher[int, int] = Batcher(broken, max_delay=0)
    with pytest.raises(TypeError, match="not a mapping"):
        await batcher.do([1])
    await batcher.close()


async def test_close_sends_what_is_waiting_and_refuses_more() -> None:
    fn = Recorder(delay=0.01)
    batcher: Batcher[int, int] = Batcher(fn, max_size=100, max_delay=60.0)
    waiting = [asyncio.create_task(batcher.do([i])) for i in range(5)]
    await asyncio.sleep(0)
    assert batcher.waiting == 5 and fn.calls == []
    await asyncio.wait_for(batcher.close(), 1.0)
    assert all(task.done() for task in waiting)
    assert [task.result() for task in waiting] == [[i * i] for i in range(5)]
    assert batcher.pending == 0
    with pytest.raises(BatcherClosed):
        await batcher.do([1])
    await batcher.close()


async def test_callers_beyond_max_pending_wait_their_turn() -> None:
    fn = Recorder(delay=0.02)
    batcher: Batcher[int, int] = Batcher(fn, max_size=4, max_delay=0.001, max_pending=8)
    most_pending = 0

    async def watch() -> None:
        nonlocal most_pending
        while True:
            most_pending = max(most_pending, batcher.pending)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(batcher.do([i, i + 1000]) for i in range(40)))
    watcher.cancel()
    assert results == [[i * i, (i + 1000) ** 2] for i in range(40)]
    assert most_pending <= 8
    assert fn.most_running <= 2  # 8 pending inputs fill two calls of 4 at most
    assert batcher.pending == 0
    alone = await batcher.do(list(range(20)))  # over max_pending: goes alone
    assert alone == [i * i for i in range(20)]
    await batcher.close()


async def test_a_cancelled_caller_gives_its_place_back() -> None:
    fn = Recorder(delay=0.05)
    batcher: Batcher[int, int] = Batcher(fn, max_size=2, max_delay=0.001, max_pending=2)
    first = asyncio.create_task(batcher.do([1, 2]))
    queued = asyncio.create_task(batcher.do([3]))
    await asyncio.sleep(0.01)
    queued.cancel()
    cancelled_result = await asyncio.gather(queued, return_exceptions=True)
    assert isinstance(cancelled_result[0], asyncio.CancelledError)
    assert await first == [1, 4]
    assert await batcher.do([5]) == [25]
    assert batcher.pending == 0
    await batcher.close()


async def test_bad_arguments_are_refused() -> None:
    fn = Recorder()
    for options in ({"max_size": 0}, {"max_delay": -1}, {"max_pending": 0}, {"max_size": True}):
        with pytest.raises(InvalidInput):
            Batcher(fn, **options)
    batcher: Batcher[Hashable, int] = Batcher(fn)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await batcher.do([[1]])  # type: ignore[list-item]
    assert await batcher.do([]) == []
    assert fn.calls == []
    await batcher.close()
