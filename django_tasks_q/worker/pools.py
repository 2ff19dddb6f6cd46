"""Where a worker runs its claimed tasks: ``--pool threads`` or ``prefork``.

Both pools take one claimed task at a time through ``submit()`` and resolve
its future when the attempt is over; the worker loop needs nothing else to
know which pool it drives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ..claims import ClaimedTask
from .connections import StrayConnectionCollector, drop_broken_connections
from .event_loop import EventLoopThread
from .execution import TaskExecutor
from .persistence import DurableWriter

logger = logging.getLogger("django_tasks_q.worker")

POOL_KINDS = ("threads", "prefork")


class TaskPool(Protocol):
    #: Whether each submitted task starts on a slot at once, so that the
    #: claim can start its attempt too (``claims.claim(start=True)``).
    starts_at_claim: bool

    def start(self) -> None: ...

    def submit(self, claimed: ClaimedTask) -> Future[None]:
        """Queue ``claimed``; a future that is cancelled before it starts means
        the attempt never began."""
        ...

    def request_cancel(self, claimed: ClaimedTask) -> None:
        """Stop the running attempt ``claimed`` as far as this pool can."""
        ...

    def abort(self, claimed: ClaimedTask) -> bool:
        """End the running attempt at once, recording nothing; ``False`` when
        this pool cannot (its thread keeps running)."""
        ...

    def shutdown(self, *, wait: bool) -> None: ...


#: Called on a slot thread when its attempt is over, with that attempt; it
#: returns the slot's next task, claimed and started, or ``None``.
ClaimNext = Callable[[ClaimedTask], ClaimedTask | None]


class ThreadPool:
    """Runs each attempt on one of ``size`` threads of the worker process.

    While the queue has a backlog, a thread that finished its task claims its
    next one itself (``claim_next``), so a busy worker's tasks do not wait for
    a hop through the claim loop; a submitted future therefore resolves when
    its thread has no next task.

    ``async def`` tasks share one event loop thread. A thread cannot be
    stopped from outside, so ``abort()`` cannot end a sync task and a timed
    out one runs on in the background.
    """

    # The worker claims no more tasks than there are idle threads.
    starts_at_claim = True

    def __init__(
        self,
        *,
        size: int,
        writer: DurableWriter,
        strays: StrayConnectionCollector,
        claim_next: ClaimNext,
    ) -> None:
        self._claim_next = claim_next
        self._event_loop = EventLoopThread()
        self._executor = TaskExecutor(self._event_loop, writer)
        self._strays = strays
        self._threads = ThreadPoolExecutor(
            max_workers=size,
            thread_name_prefix="tasks-q-slot",
            initializer=strays.own_current_thread,
        )

    def start(self) -> None:
        pass

    def submit(self, claimed: ClaimedTask) -> Future[None]:
        return self._threads.submit(self._run, claimed)

    def request_cancel(self, claimed: ClaimedTask) -> None:
        self._executor.request_cancel(claimed)

    def abort(self, claimed: ClaimedTask) -> bool:
        return False

    def shutdown(self, *, wait: bool) -> None:
        self._threads.shutdown(wait=wait)
        if wait:
            self._event_loop.stop()

    def _run(self, claimed: ClaimedTask) -> None:
        next_task: ClaimedTask | None = claimed
        while next_task is not None:
            self._run_one(next_task)
            next_task = self._claim_next(next_task)

    def _run_one(self, claimed: ClaimedTask) -> None:
        try:
            self._executor.execute(claimed)
        except Exception:
            # Only the worker's own writes can get here (the task's errors
            # are caught inside); log and carry on with the next task.
            logger.exception(
                "Worker id=%s could not record task id=%s",
                claimed.worker_id,
                claimed.id,
                extra={
                    "action": "task_write_failed",
                    "worker_id": claimed.worker_id,
                    "task_id": str(claimed.id),
                },
            )
        finally:
            drop_broken_connections()
            self._strays.collect()
