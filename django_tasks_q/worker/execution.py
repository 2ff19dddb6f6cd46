"""Running one claimed task: start, decode, call, encode, finish.

Each step that can fail because of the task's own data ends that task with
its own error code; nothing here lets an exception escape to the worker.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from .. import claims
from ..claims import ClaimedTask
from ..codes import NEVER_RETRIED, ErrorCode
from ..context import activate, context_for, deactivate
from ..exceptions import TaskFailure
from ..registry import registry
from ..results import TaskError
from ..serialization import PayloadError, SerializationError, decode, encode
from ..task import BaseTask
from .event_loop import EventLoopThread

logger = logging.getLogger("django_tasks_q.worker")


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _error_from_exception(exc: BaseException) -> TaskError:
    if isinstance(exc, TaskFailure):
        code, message, data = exc.error_code, exc.message, exc.data
    else:
        code, message, data = ErrorCode.UNHANDLED_EXCEPTION, str(exc), None
    return TaskError(
        error_code=code,
        message=message or type(exc).__name__,
        data=data,
        exception_type=_qualified_name(type(exc)),
        traceback="".join(traceback.format_exception(exc)),
    )


def retry_delay(
    task: BaseTask[Any, Any] | None,
    claimed: ClaimedTask,
    error: TaskError,
    exc: BaseException | None,
) -> float | None:
    """Seconds until the next attempt, or ``None`` when the task is done for."""
    if task is None or task.retry_policy is None:
        return None
    if claimed.attempt >= claimed.max_attempts or error.error_code in NEVER_RETRIED:
        return None

    if task.auto_retry_for:
        matched = any(
            matcher == error.error_code
            if isinstance(matcher, str)
            else exc is not None and isinstance(exc, matcher)
            for matcher in task.auto_retry_for
        )
        if not matched:
            return None
    return task.retry_policy.delay(claimed.attempt)


class TaskExecutor:
    """Executes claimed tasks; one instance is shared by a worker's threads."""

    def __init__(self, event_loop: EventLoopThread) -> None:
        self.event_loop = event_loop

    def execute(self, claimed: ClaimedTask) -> None:
        if not claims.start(claimed):
            return

        task = registry.get(claimed.name)
        log_extra = {
            "task_id": str(claimed.id),
            "task_name": claimed.name,
            "attempt": claimed.attempt,
            "worker_id": claimed.worker_id,
        }
        logger.info(
            "Task id=%s name=%s attempt=%s started",
            claimed.id,
            claimed.name,
            claimed.attempt,
            extra={"action": "task_started", **log_extra},
        )

        if task is None:
            error = TaskError(
                error_code=ErrorCode.TASK_NOT_REGISTERED,
                message=f"No task named {claimed.name!r} is registered in this worker.",
            )
            self._finish_failed(None, claimed, error, None, log_extra)
            return

        try:
            args, kwargs = task.signature.rehydrate_arguments(
                decode(claimed.args), decode(claimed.kwargs)
            )
        except (PayloadError, TypeError, ValueError) as exc:
            # ValueError covers pydantic.ValidationError from the annotations.
            error = TaskError(
                error_code=ErrorCode.PAYLOAD_INVALID,
                message=f"The stored arguments cannot be decoded: {exc}",
                exception_type=_qualified_name(type(exc)),
            )
            self._finish_failed(task, claimed, error, None, log_extra)
            return

        started = time.monotonic()
        try:
            value = self._call(task, claimed, args, kwargs)
        except (Exception, SystemExit) as exc:
            error = _error_from_exception(exc)
            self._finish_failed(task, claimed, error, exc, log_extra)
            return

        try:
            encoded = encode(value, "result")
        except SerializationError as exc:
            error = TaskError(
                error_code=ErrorCode.RESULT_NOT_SERIALIZABLE,
                message=f"The task's return value cannot be stored: {exc}",
                exception_type=_qualified_name(type(value)),
            )
            self._finish_failed(task, claimed, error, None, log_extra)
            return

        if claims.complete(claimed, encoded):
            logger.info(
                "Task id=%s name=%s attempt=%s completed in %.3fs",
                claimed.id,
                claimed.name,
                claimed.attempt,
                time.monotonic() - started,
                extra={"action": "task_completed", **log_extra},
            )

    def _call(
        self,
        task: BaseTask[Any, Any],
        claimed: ClaimedTask,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        context = context_for(claimed)
        if task.is_async:

            async def run_in_context() -> Any:
                token = activate(context)
                try:
                    return await task.func(*args, **kwargs)
                finally:
                    deactivate(token)

            return self.event_loop.run(run_in_context())

        token = activate(context)
        try:
            return task.func(*args, **kwargs)
        finally:
            deactivate(token)

    def _finish_failed(
        self,
        task: BaseTask[Any, Any] | None,
        claimed: ClaimedTask,
        error: TaskError,
        exc: BaseException | None,
        log_extra: dict[str, Any],
    ) -> None:
        delay = retry_delay(task, claimed, error, exc)
        if not claims.fail(claimed, error, delay):
            return

        if delay is not None:
            logger.warning(
                "Task id=%s name=%s attempt=%s failed with %s; retrying in %.1fs",
                claimed.id,
                claimed.name,
                claimed.attempt,
                error.error_code,
                delay,
                extra={
                    "action": "task_retrying",
                    "error_code": error.error_code,
                    "retry_in": delay,
                    **log_extra,
                },
            )
            return

        logger.error(
            "Task id=%s name=%s attempt=%s failed with %s: %s",
            claimed.id,
            claimed.name,
            claimed.attempt,
            error.error_code,
            error.message,
            # A TaskFailure is the task's own verdict; its traceback adds nothing.
            exc_info=None if isinstance(exc, TaskFailure) else exc,
            extra={
                "action": "task_failed",
                "error_code": error.error_code,
                **log_extra,
            },
        )
