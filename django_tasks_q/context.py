"""What a running task can learn about itself: ``current_task()``."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from .exceptions import TaskCancelled

if TYPE_CHECKING:
    from .claims import ClaimedTask


@dataclass(frozen=True)
class TaskContext:
    """The run a task function is executing in.

    Outside a worker (a direct call such as ``my_task(1)``) every field is
    ``None`` and ``set_progress()`` does nothing, so tasks that report
    progress can still be called inline in tests.
    """

    task_id: str | None = None
    task_name: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    worker_id: str | None = None
    #: Unique to this attempt: a good idempotency key for side effects.
    lease_token: str | None = None
    _claimed: ClaimedTask | None = None
    _cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def is_retry(self) -> bool:
        return self.attempt is not None and self.attempt > 1

    @property
    def cancel_requested(self) -> bool:
        """Whether ``handle.cancel()`` asked this run to stop.

        A sync task that can stop early checks this (or calls
        ``raise_if_cancelled()``) between steps; nothing stops it otherwise.
        """
        return self._cancel_requested.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``TaskCancelled`` if a cancel was requested, ending the task
        ``CANCELLED``."""
        if self.cancel_requested:
            raise TaskCancelled("The task was cancelled while it ran.")

    def set_progress(
        self, done: float, total: float | None = None, message: str = ""
    ) -> bool:
        """Store progress on the task row, readable through ``info()``.

        Returns whether it was stored: ``False`` outside a worker, or when the
        worker no longer holds this run's lease.
        """
        if self._claimed is None:
            return False

        from .claims import set_progress

        progress: dict[str, Any] = {"done": done, "total": total, "message": message}
        return set_progress(self._claimed, progress)

    async def aset_progress(
        self, done: float, total: float | None = None, message: str = ""
    ) -> bool:
        """Async twin of ``set_progress()``, for ``async def`` tasks."""
        return await sync_to_async(self.set_progress)(done, total, message)


_NO_TASK = TaskContext()
_current: ContextVar[TaskContext] = ContextVar(
    "django_tasks_q_task",
    default=_NO_TASK,  # Frozen, so one shared instance is safe.
)


def current_task() -> TaskContext:
    """Return the context of the task run executing in this thread or coroutine."""
    return _current.get()


def context_for(claimed: ClaimedTask) -> TaskContext:
    return TaskContext(
        task_id=str(claimed.id),
        task_name=claimed.name,
        attempt=claimed.attempt,
        max_attempts=claimed.max_attempts,
        worker_id=claimed.worker_id,
        lease_token=str(claimed.lease_token),
        _claimed=claimed,
    )


def activate(context: TaskContext) -> Any:
    """Make ``context`` current; pass the returned token to ``deactivate``."""
    return _current.set(context)


def deactivate(token: Any) -> None:
    _current.reset(token)
