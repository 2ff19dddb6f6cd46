"""Where a worker runs its claimed tasks: ``--pool threads`` or ``prefork``.

Both pools take one claimed task at a time through ``submit()`` and resolve
its future when the attempt is over; the worker loop needs nothing else to
know which pool it drives.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ..claims import ClaimedTask, CompletedAndClaimed, NextClaim
from .batching import CompletionBatcher
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

    def request_cancel(self, claimed: ClaimedTask) -> bool:
        """Stop the running attempt ``claimed`` as far as this pool can.

        ``False`` when the attempt is not on a slot: not yet (a claim marks
        it running before its slot takes it up) or no longer. The worker
        then asks again on its next pass.
        """
        ...

    def abort(self, claimed: ClaimedTask) -> bool:
        """End the running attempt at once, recording nothing; ``False`` when
        this pool cannot (its thread keeps running)."""
        ...

    def shutdown(self, *, wait: bool) -> None: ...


class SlotFeed(Protocol):
    """How a thread pool slot gets its next task without the claim loop."""

    def next_claim(self, finished: ClaimedTask) -> NextClaim | None:
        """Asked as ``finished`` completes: the claim to run in the
        completion's statement, or ``None`` for none."""
        ...

    def next_task(
        self, finished: ClaimedTask, folded: CompletedAndClaimed | None
    ) -> ClaimedTask | None:
        """Once ``finished`` is over: the slot's next task, the one the
        completion claimed (``folded``) or one claimed now; ``None`` ends the
        slot's run."""
        ...


class ThreadPool:
    """Runs each attempt on one of ``size`` threads of the worker process.

    While the queue has a backlog, a thread that finished its task claims its
    next one itself (``feed``), in the completion's statement where the
    database allows, so a busy worker's tasks do not wait for a hop through
    the claim loop; a submitted future therefore resolves when its thread has
    no next task.

    With ``completion_batch_wait`` above zero, slots that finish close
    together store their results in one statement (``batching``).

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
        feed: SlotFeed,
        completion_batch_wait: float = 0.0,
    ) -> None:
        self._feed = feed
        self._event_loop = EventLoopThread()
        self._busy_slots = 0
        self._busy_lock = threading.Lock()
        batcher = (
            CompletionBatcher(
                wait=completion_batch_wait,
                busy_slots=lambda: self._busy_slots,
                writer=writer,
            )
            if completion_batch_wait > 0
            else None
        )
        self._executor = TaskExecutor(self._event_loop, writer, batcher=batcher)
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

    def request_cancel(self, claimed: ClaimedTask) -> bool:
        return self._executor.request_cancel(claimed)

    def abort(self, claimed: ClaimedTask) -> bool:
        return False

    def shutdown(self, *, wait: bool) -> None:
        self._threads.shutdown(wait=wait)
        if wait:
            self._event_loop.stop()

    def _run(self, claimed: ClaimedTask) -> None:
        next_task: ClaimedTask | None = claimed
        while next_task is not None:
            folded = self._run_one(next_task)
            next_task = self._feed.next_task(next_task, folded)

    def _run_one(self, claimed: ClaimedTask) -> CompletedAndClaimed | None:
        with self._busy_lock:
            self._busy_slots += 1
        try:
            return self._executor.execute(
                claimed, lambda: self._feed.next_claim(claimed)
            )
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
            return None
        finally:
            with self._busy_lock:
                self._busy_slots -= 1
            drop_broken_connections()
            self._strays.collect()
