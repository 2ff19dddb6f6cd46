"""How ``TaskHandle.get()`` waits between looks at a task's row.

``ResultWaiter`` is the seam between the handle and the database. Where
notifications work (PostgreSQL with ``TASKS_Q["LISTEN"]`` on) the waiter
sleeps until the task's completion is announced, with a safety poll every
``POLL_INTERVAL``; everywhere else it polls with a short, growing interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

from .conf import get_settings
from .notifications import FinishedTasks, finished_tasks, notifications_enabled


class ResultWaiter(Protocol):
    """Blocks until a task may have changed, or until ``timeout`` seconds.

    One instance belongs to one ``get()`` call; ``close()`` ends it.
    """

    def wait(self, timeout: float) -> None: ...

    async def wait_async(self, timeout: float) -> None: ...

    def close(self) -> None: ...


def poll_delays(
    first: float = 0.01, factor: float = 1.5, cap: float = 0.5
) -> Iterator[float]:
    """Yield growing sleeps: quick answers for quick tasks, few polls for slow."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


class PollingResultWaiter:
    """Waits a growing interval between reads of the row."""

    def __init__(self) -> None:
        self._delays = poll_delays()
        self._sleeper = threading.Event()

    def wait(self, timeout: float) -> None:
        self._sleeper.wait(min(next(self._delays), timeout))

    async def wait_async(self, timeout: float) -> None:
        await asyncio.sleep(min(next(self._delays), timeout))

    def close(self) -> None:
        pass


class NotifiedResultWaiter:
    """Sleeps until the task's completion is announced on ``tasks_q.finished``.

    Subscribes before the caller reads the row again, so an announcement
    made in between is not missed. Polls as ``PollingResultWaiter`` does if
    the listening connection could not be opened in time.
    """

    def __init__(
        self,
        task_id: str,
        finished: FinishedTasks,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.task_id = task_id
        self._finished = finished
        self._woken = threading.Event()
        self._loop = loop
        self._woken_async = asyncio.Event() if loop is not None else None
        self._safety_poll = get_settings().poll_interval
        self._fallback = poll_delays()
        self.listening = finished.subscribe(task_id, self._wake)

    def _wake(self) -> None:
        # Called on the listener's thread.
        self._woken.set()
        if self._loop is not None and self._woken_async is not None:
            with contextlib.suppress(RuntimeError):  # The loop has closed.
                self._loop.call_soon_threadsafe(self._woken_async.set)

    def _sleep_for(self, timeout: float) -> float:
        if self.listening:
            return min(self._safety_poll, timeout)
        return min(next(self._fallback), timeout)

    def wait(self, timeout: float) -> None:
        self._woken.wait(self._sleep_for(timeout))
        self._woken.clear()

    async def wait_async(self, timeout: float) -> None:
        assert self._woken_async is not None, "created without an event loop"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken_async.wait(), self._sleep_for(timeout))
        self._woken_async.clear()

    def close(self) -> None:
        self._finished.unsubscribe(self.task_id, self._wake)


def result_waiter(
    task_id: str, loop: asyncio.AbstractEventLoop | None = None
) -> ResultWaiter:
    """Return the waiter for one ``get()`` (or, given its loop, ``get_async()``)
    call on ``task_id``; it may block briefly to open the listening
    connection."""
    database = get_settings().database
    if notifications_enabled(database):
        return NotifiedResultWaiter(task_id, finished_tasks(database), loop)
    return PollingResultWaiter()
