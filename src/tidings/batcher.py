"""The batcher: concurrent requests for single items coalesced into bulk calls (hydro's Batcher).

async def load(ids: list[int]) -> dict[int, str]:
    ...  # one query for many ids

batcher = tidings.Batcher(load, max_size=100, max_delay=0.005)
names = await batcher.do([3, 1, 2])  # ["three", "one", "two"], sharing calls with others
await batcher.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from tidings.errors import BatcherClosed, InvalidInput, MissingOutput

log = logging.getLogger("tidings.batcher")

In = TypeVar("In", bound=Hashable)
Out = TypeVar("Out")

DEFAULT_MAX_PENDING = 10_000


class _Request(Generic[In, Out]):
    """One caller of ``do``: its inputs, what came back so far, and its answer."""

    __slots__ = ("future", "inputs", "outputs", "remaining")

    def __init__(self, inputs: list[In], future: asyncio.Future[list[Out]]) -> None:
        self.inputs = inputs
        self.future = future
        self.remaining = set(inputs)
        self.outputs: dict[In, Out] = {}

    def give(self, item: In, output: Out) -> None:
        if self.future.done():
            return
        self.outputs[item] = output
        self.remaining.discard(item)
        if not self.remaining:
            self.future.set_result([self.outputs[i] for i in self.inputs])

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Batcher(Generic[In, Out]):
    """Coalesce concurrent ``do(inputs)`` calls into few ``await fn(inputs)`` calls.

    ``fn`` takes a list of distinct inputs (at most ``max_size``) and returns a
    mapping from each input to its output. A call goes out as soon as ``max_size``
    distinct inputs wait, or ``max_delay`` seconds after the first of them arrived;
    calls run concurrently. Each caller gets a list of the outputs of its own inputs
    in its order; when ``fn`` raises, every caller with an input in that call gets
    the exception, and when ``fn``'s result lacks an input, the callers that asked
    for it get ``MissingOutput`` (a ``KeyError``). Inputs waiting to go out are
    shared between callers; inputs already sent are not (a later caller gets a fresh
    answer).

    At most ``max_pending`` inputs are accepted and unanswered at a time; further
    callers wait their turn, first come first served (a caller with more inputs than
    that goes alone once nothing is pending).
    """

    def __init__(
        self,
        fn: Callable[[list[In]], Awaitable[Mapping[In, Out]]],
        max_size: int = 100,
        max_delay: float = 0.005,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str = "tidings.batcher",
    ) -> None:
        if not callable(fn):
            raise InvalidInput(f"fn must be an async callable, not {fn!r}")
        for option, value in (("max_size", max_size), ("max_pending", max_pending)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{option} must be an int >= 1, not {value!r}")
        if isinstance(max_delay, bool) or not isinstance(max_delay, int | float) or max_delay < 0:
            raise InvalidInput(f"max_delay must be a number >= 0, not {max_delay!r}")
        self.fn = fn
        self.max_size = max_size
        self.max_delay = float(max_delay)
        self.max_pending = max_pending
        self.name = name
        self.calls = 0
        self.failed_calls = 0
        self.pending = 0
        self._waiting: dict[In, list[_Request[In, Out]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._closing = False
        self._closed = False

    async def do(self, inputs: Iterable[In]) -> list[Out]:
        """The outputs of ``inputs``, in their order, from calls shared with other callers.

        Raises whatever ``fn`` raised for a call holding one of these inputs,
        ``MissingOutput`` for an input ``fn`` left out, ``InvalidInput`` for an
        unhashable input and ``BatcherClosed`` after ``close``.
        """
        if self._closing:
            raise BatcherClosed(f"batcher {self.name} is closed")
        items = list(inputs)
        for item in items:
            try:
                hash(item)
            except TypeError:
                raise InvalidInput(f"batcher inputs must be hashable, not {item!r}") from None
        if not items:
            return []
        distinct = list(dict.fromkeys(items))
        await self._admit(len(distinct))
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        request: _Request[In, Out] = _Request(items, future)
        for item in distinct:
            waiters = self._waiting.get(item)
            if waiters is None:
                self._waiting[item] = [request]
            else:
                waiters.append(request)
            if len(self._waiting) >= self.max_size:
                self._send(self.max_size)
        if self._closing or self.max_delay == 0:
            self._send(len(self._waiting))
        elif self._waiting and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay, self._due)
        return await future

    async def close(self) -> None:
        """Send every waiting input now, answer every caller, and refuse new work."""
        self._closing = True
        while self._waiting or self._calls or self._queue or self.pending:
            self._send(len(self._waiting))
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)
            else:
                await asyncio.sleep(0)  # let admitted callers enqueue their inputs
        self._closed = True

    @property
    def waiting(self) -> int:
        """Distinct inputs waiting to be sent."""
        return len(self._waiting)

    # -- admission -----------------------------------------------------------------

    async def _admit(self, count: int) -> None:
        """Wait until ``count`` more inputs fit under ``max_pending``, in arrival order."""
        if not self._queue and self._fits(count):
            self.pending += count
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, ticket)
        self._queue.append(entry)
        try:
            await ticket
        except BaseException:
            if ticket.done() and not ticket.cancelled():
                self._release(count)  # admitted, but the caller gave up before using it
            else:
                self._queue.remove(entry)
                self._wake()
            raise

    def _fits(self, count: int) -> bool:
        return self.pending == 0 or self.pending + count <= self.max_pending

    def _release(self, count: int) -> None:
        self.pending -= count
        self._wake()

    def _wake(self) -> None:
        while self._queue and self._fits(self._queue[0][0]):
            count, ticket = self._queue.popleft()
            self.pending += count
            ticket.set_result(None)

    # -- calls ---------------------------------------------------------------------

    def _due(self) -> None:
        self._timer = None
        self._send(len(self._waiting))

    def _send(self, count: int) -> None:
        """Start calls for the first ``count`` waiting inputs, ``max_size`` at a time."""
        while count > 0 and self._waiting:
            size = min(count, self.max_size, len(self._waiting))
            batch = {}
            for item in list(self._waiting)[:size]:
                batch[item] = self._waiting.pop(item)
            count -= size
            task = asyncio.get_running_loop().create_task(self._call(batch), name=self.name)
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        if not self._waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _call(self, batch: dict[In, list[_Request[In, Out]]]) -> None:
        self.calls += 1
        try:
            try:
                outputs = await self.fn(list(batch))
                if not isinstance(outputs, Mapping):
                    raise TypeError(
                        f"batch function {self.fn!r} returned {type(outputs).__name__}, "
                        "not a mapping of inputs to outputs"
                    )
            except asyncio.CancelledError:
                closed = BatcherClosed(f"batcher {self.name}: a call was cancelled")
                for requests in batch.values():
                    for request in requests:
                        request.fail(closed)
                raise
            except Exception as exc:
                self.failed_calls += 1
                log.debug("batcher %s: a call of %d inputs failed", self.name, len(batch))
                for requests in batch.values():
                    for request in requests:
                        request.fail(exc)
                return
            for item, requests in batch.items():
                try:
                    output = outputs[item]
                except KeyError:
                    for request in requests:
                        request.fail(MissingOutput(item))
                    continue
                for request in requests:
                    request.give(item, output)
        finally:
            self._release(sum(len(requests) for requests in batch.values()))
