"""``TaskHandle``: the caller's side of a sent task."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

from .codes import ErrorCode
from .conf import get_settings
from .results import TaskError, TaskInfo, TaskResult, error_result
from .states import TaskStatus
from .waiting import result_waiter

if TYPE_CHECKING:
    from .models import Task as TaskRow

T = TypeVar("T")

_RESULT_FIELDS = (
    "id",
    "name",
    "status",
    "result",
    "error_code",
    "error_message",
    "error_data",
    "exception_type",
    "traceback",
)


class TaskHandle(Generic[T]):
    """Refers to one sent task; wait for it with ``get()`` or ``get_async()``.

    Rebuild a handle elsewhere from ``task_id`` with ``TaskHandle(task_id)``
    or, typed, with ``my_task.handle(task_id)``.
    """

    def __init__(
        self, task_id: str | uuid.UUID, *, task_name: str | None = None
    ) -> None:
        try:
            self.task_id = str(
                task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))
            )
        except ValueError:
            raise ValueError(f"{task_id!r} is not a task id (a UUID).") from None
        self.task_name = task_name
        self._result: TaskResult[T, TaskError] | None = None
        # Set by a send inside a transaction; see _sent_in_open_transaction().
        self._commit_callback: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)

    def get(self, timeout_ms: int | None = None) -> TaskResult[T, TaskError]:
        """Wait for the task to finish and return its result.

        ``timeout_ms=None`` waits for ever and ``0`` looks once. Never raises
        for the task's outcome: failures and timeouts are error results.
        """
        if self._result is not None:
            return self._result
        if self._sent_in_open_transaction():
            return self._not_committed()

        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        row = self._fetch()
        if row is None or row.status in TaskStatus.finished() or timeout_ms == 0:
            return self._conclude(row, timeout_ms)

        waiter = result_waiter(self.task_id)
        try:
            while True:
                # Read again once subscribed: nothing announced is missed.
                row = self._fetch()
                if row is None or row.status in TaskStatus.finished():
                    return self._conclude(row, timeout_ms)
                remaining = _remaining(deadline)
                if remaining <= 0:
                    return self._wait_timeout(timeout_ms)
                waiter.wait(remaining)
        finally:
            waiter.close()

    async def get_async(
        self, timeout_ms: int | None = None
    ) -> TaskResult[T, TaskError]:
        """Async twin of ``get()``; the event loop keeps running while it waits."""
        if self._result is not None:
            return self._result
        if await sync_to_async(self._sent_in_open_transaction)():
            return self._not_committed()

        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        row = await sync_to_async(self._fetch)()
        if row is None or row.status in TaskStatus.finished() or timeout_ms == 0:
            return self._conclude(row, timeout_ms)

        # Opening the listening connection may block: not on the loop.
        waiter = await sync_to_async(result_waiter, thread_sensitive=False)(
            self.task_id, asyncio.get_running_loop()
        )
        try:
            while True:
                row = await sync_to_async(self._fetch)()
                if row is None or row.status in TaskStatus.finished():
                    return self._conclude(row, timeout_ms)
                remaining = _remaining(deadline)
                if remaining <= 0:
                    return self._wait_timeout(timeout_ms)
                await waiter.wait_async(remaining)
        finally:
            waiter.close()

    def cancel(self) -> bool:
        """Cancel the task.

        A task that has not started ends ``CANCELLED`` at once. A running one
        is asked to stop: an ``async def`` task is cancelled, a sync task sees
        ``current_task().cancel_requested``, and a prefork worker ends the
        process running it. Either way ``get()`` then returns
        ``TASK_CANCELLED`` (unless the task finished first). Returns ``False``
        when the task had already finished or does not exist.
        """
        from .cancellation import cancel

        return cancel(self.task_id, get_settings().database)

    async def acancel(self) -> bool:
        """Async twin of ``cancel()``."""
        return await sync_to_async(self.cancel)()

    def info(
        self, include_result: bool = False, include_failed_reason: bool = False
    ) -> TaskInfo | None:
        """Return the task's stored metadata, or ``None`` when there is no row.

        ``include_result`` adds the result of a finished task;
        ``include_failed_reason`` adds the error of a failed one.
        """
        from .models import Task as TaskRow

        row = (
            TaskRow.objects.using(get_settings().database)
            .filter(pk=self.task_id)
            .first()
        )
        if row is None:
            return None

        finished = row.status in TaskStatus.finished()
        result = self._to_result(row) if include_result and finished else None
        failed_reason = None
        if include_failed_reason and row.error_code:
            failed_reason = _error_from_row(row)

        return TaskInfo(
            task_id=str(row.id),
            task_name=row.name,
            queue=row.queue,
            priority=row.priority,
            status=row.status,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            enqueued_at=row.enqueued_at,
            run_after=row.run_after,
            good_until=row.good_until,
            claimed_at=row.claimed_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            worker_id=row.worker_id or None,
            progress=row.progress,
            result=result,
            failed_reason=failed_reason,
        )

    async def info_async(
        self, include_result: bool = False, include_failed_reason: bool = False
    ) -> TaskInfo | None:
        """Async twin of ``info()``."""
        return await sync_to_async(self.info)(include_result, include_failed_reason)

    def _sent_in_open_transaction(self) -> bool:
        """Whether the transaction that sent the task is still open.

        Django keeps the commit callback queued until that transaction commits
        and drops it on rollback, so its presence answers exactly.
        """
        if self._commit_callback is None:
            return False
        connection = connections[get_settings().database]
        return any(
            queued[1] is self._commit_callback for queued in connection.run_on_commit
        )

    def _fetch(self) -> TaskRow | None:
        from .models import Task as TaskRow

        return (
            TaskRow.objects.using(get_settings().database)
            .filter(pk=self.task_id)
            .only(*_RESULT_FIELDS)
            .first()
        )

    def _conclude(
        self, row: TaskRow | None, timeout_ms: int | None
    ) -> TaskResult[T, TaskError]:
        """The answer for ``row``: not found, finished, or not finished yet."""
        if row is None:
            return self._not_found()
        if row.status in TaskStatus.finished():
            return self._finish(row)
        return self._wait_timeout(timeout_ms)

    def _finish(self, row: TaskRow) -> TaskResult[T, TaskError]:
        self._result = self._to_result(row)
        return self._result

    def _to_result(self, row: TaskRow) -> TaskResult[T, TaskError]:
        if row.status == TaskStatus.COMPLETED:
            return self._decode_result(row)
        if row.status == TaskStatus.CANCELLED and not row.error_code:
            return error_result(ErrorCode.TASK_CANCELLED, "The task was cancelled.")
        if row.status == TaskStatus.EXPIRED and not row.error_code:
            return error_result(ErrorCode.TASK_EXPIRED, "The task expired.")
        return TaskResult(err=_error_from_row(row))

    def _decode_result(self, row: TaskRow) -> TaskResult[T, TaskError]:
        import pydantic

        from .registry import registry
        from .serialization import PayloadError, decode

        definition = registry.get(row.name)
        try:
            value = decode(row.result)
            if definition is not None:
                value = definition.signature.rehydrate_result(value)
        except (PayloadError, pydantic.ValidationError) as exc:
            return error_result(
                ErrorCode.RESULT_INVALID,
                f"The result of task {row.name!r} cannot be read back: {exc}",
            )
        return TaskResult(ok=value)

    def _not_found(self) -> TaskResult[T, TaskError]:
        return error_result(
            ErrorCode.TASK_NOT_FOUND, f"No task with id {self.task_id!r} exists."
        )

    def _not_committed(self) -> TaskResult[T, TaskError]:
        return error_result(
            ErrorCode.TASK_NOT_COMMITTED,
            f"Task {self.task_id} was sent inside the transaction that is still "
            "open, so no worker can see it; wait for it after the commit.",
        )

    def _wait_timeout(self, timeout_ms: int | None) -> TaskResult[T, TaskError]:
        return error_result(
            ErrorCode.WAIT_TIMEOUT,
            f"Task {self.task_id} did not finish within {timeout_ms} ms.",
        )


def _remaining(deadline: float | None) -> float:
    if deadline is None:
        return 3600.0
    return deadline - time.monotonic()


def _error_from_row(row: Any) -> TaskError:
    return TaskError(
        error_code=row.error_code,
        message=row.error_message,
        data=row.error_data,
        exception_type=row.exception_type or None,
        traceback=row.traceback or None,
    )
