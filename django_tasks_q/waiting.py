"""How ``TaskHandle.get()`` waits between looks at a task's row.

``ResultWaiter`` is the seam: the polling waiter below works on every
database; a notification-driven waiter can replace it where the database
can push completions, without ``TaskHandle`` changing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Protocol


class ResultWaiter(Protocol):
    """Blocks until a task may have changed, or until ``timeout`` seconds."""

    def wait(self, task_id: str, timeout: float) -> None: ...

    async def wait_async(self, task_id: str, timeout: float) -> None: ...


def poll_delays(
    first: float = 0.01, factor: float = 1.5, cap: float = 0.5
) -> Iterator[float]:
    """Yield growing sleeps: quick answers for quick tasks, few polls for slow."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


class PollingResultWaiter:
    """Waits a growing interval between reads of the row.

    One instance belongs to one ``get()`` call, since it keeps the backoff.
    """

    def __init__(self) -> None:
        self._delays = poll_delays()
        self._sleeper = threading.Event()

    def wait(self, task_id: str, timeout: float) -> None:
        self._sleeper.wait(min(next(self._delays), timeout))

    async def wait_async(self, task_id: str, timeout: float) -> None:
        await asyncio.sleep(min(next(self._delays), timeout))


def result_waiter() -> ResultWaiter:
    """Return the waiter for one ``get()`` call."""
    return PollingResultWaiter()
