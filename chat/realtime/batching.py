"""Many sockets' reads of the same kind made as one call on the database thread.

A process has one database thread (channels' `database_sync_to_async`), and every socket that
opens reads its session's user, its room and the policy's answer there. One at a time, a crowd
of connects after a deploy queues thousands of small calls on that thread, each paying Django's
query compilation, a connection check-out and a round trip (issue 21: 2,000 sockets took 50 s
to open). A `Batched` function takes the requests that arrive while its previous call runs and
answers them all with the next call: a few set-based queries for fifty sockets instead of a
few queries each. Alone, a request goes at once: batching adds no wait when nothing queues.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

Request = TypeVar("Request")
Result = TypeVar("Result")


class Batched(Generic[Request, Result]):
    """`await batched(request)`: the answer for one request, from a call of `function` (run on
    the database thread) with every request waiting then, in order, at most `limit` at a time.

    `function` returns one result per request, in the same order; a result that is an exception
    is raised to that request's caller alone. An exception from the call itself is raised to
    every caller in the batch. The state belongs to the event loop it was made in, so one
    module-level instance serves a server process and every test's loop alike.
    """

    def __init__(
        self, function: Callable[[list[Request]], Sequence[Result]], *, limit: int = 200
    ) -> None:
        self.function = function
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[Request, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def __call__(self, request: Request) -> Result:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._task = loop, [], None
        future = loop.create_future()
        self._waiting.append((request, future))
        if self._task is None:
            self._task = loop.create_task(self._drain(), name=f"batched-{self.function.__name__}")
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.limit]
                del self._waiting[: self.limit]
                batch = [(request, future) for request, future in batch if not future.done()]
                if batch:
                    await self._call(batch)
        finally:
            self._task = None

    async def _call(self, batch: list[tuple[Request, asyncio.Future]]) -> None:
        try:
            results = await database_sync_to_async(self.function)([r for r, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.function.__name__}: {len(results)} answers")
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller went away (the socket closed)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
