"""Running one claimed task: start, decode, call, encode, finish.

Each step that can fail because of the task's own data ends that task with
its own error code; nothing here lets an exception escape to the worker.
The attempt's timeout and cancel requests are applied here too, as far as a
thread can apply them: an ``async def`` task is cancelled on its event loop,
a sync task is told through its context and, past its timeout, left to run
on with its outcome discarded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from .. import claims
from ..claims import ClaimedTask, CompletedAndClaimed, NextClaim
from ..codes import NEVER_RETRIED, ErrorCode
from ..context import TaskContext, activate, context_for, deactivate
from ..exceptions import TaskCancelled, TaskFailure
from ..registry import registry
from ..results import TaskError
from ..serialization import PayloadError, SerializationError, decode, encode
from ..task import BaseTask
from .batching import CompletionBatcher
from .event_loop import EventLoopThread
from .persistence import DurableWriter, OutcomeLost

logger = logging.getLogger("django_tasks_q.worker")

#: Seconds a timed-out ``async def`` task gets to unwind after cancellation.
ASYNC_CANCEL_GRACE = 1.0

#: Asked when an attempt completed: what the slot should claim next, if
#: anything.
AskNextClaim = Callable[[], NextClaim | None]


class AttemptTimedOut(Exception):
    """The attempt ran longer than its task's ``timeout``."""


def timeout_error(timeout: float) -> TaskError:
    return TaskError(
        error_code=ErrorCode.TASK_TIMEOUT,
        message=f"The attempt ran longer than the task's timeout of {timeout:g}s.",
    )


@dataclass
class RunControl:
    """Handles on one running attempt for the worker to cancel it by."""

    context: TaskContext
    loop: asyncio.AbstractEventLoop | None = None
    loop_task: asyncio.Task[Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request_cancel(self) -> None:
        self.context._cancel_requested.set()
        with self.lock:
            if self.loop is not None and self.loop_task is not None:
                self.loop.call_soon_threadsafe(self.loop_task.cancel)

    def attach(
        self, loop: asyncio.AbstractEventLoop, loop_task: asyncio.Task[Any]
    ) -> None:
        with self.lock:
            self.loop, self.loop_task = loop, loop_task


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
    """Executes claimed tasks; one instance is shared by a worker's threads.

    With ``enforce_timeouts=False`` (a prefork child, whose parent kills it
    at the deadline) the task runs without a timer of its own. With a
    ``batcher``, completions join those of other slots where the database
    can store them together.
    """

    def __init__(
        self,
        event_loop: EventLoopThread,
        writer: DurableWriter,
        *,
        enforce_timeouts: bool = True,
        batcher: CompletionBatcher | None = None,
    ) -> None:
        self.event_loop = event_loop
        self.writer = writer
        self.enforce_timeouts = enforce_timeouts
        self.batcher = batcher
        self._controls: dict[uuid.UUID, RunControl] = {}
        self._controls_lock = threading.Lock()

    def request_cancel(self, claimed: ClaimedTask) -> bool:
        """Ask the running attempt ``claimed`` to stop; ``False`` if it is not
        running here."""
        with self._controls_lock:
            control = self._controls.get(claimed.id)
        if control is None or control.context.lease_token != str(claimed.lease_token):
            return False
        control.request_cancel()
        return True

    def execute(
        self, claimed: ClaimedTask, next_claim: AskNextClaim | None = None
    ) -> CompletedAndClaimed | None:
        """Run ``claimed`` to its end.

        ``next_claim`` is asked, once the task completed, what to claim next;
        on a database that can, the claim then shares the completion's
        statement, and its outcome is returned. ``None`` means no claim ran.
        """
        try:
            return self._execute(claimed, next_claim)
        except OutcomeLost as exc:
            self.writer.hand_back(claimed, str(exc))
            return None

    def _write(
        self, claimed: ClaimedTask, what: str, apply: Callable[[], bool]
    ) -> bool:
        return self.writer.write(claimed, what, apply)

    def _execute(
        self, claimed: ClaimedTask, next_claim: AskNextClaim | None
    ) -> CompletedAndClaimed | None:
        if not claimed.started and not self._write(
            claimed, "start", lambda: claims.start(claimed)
        ):
            return None

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
            return None

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
            return None

        started = time.monotonic()
        control = RunControl(context_for(claimed))
        with self._controls_lock:
            self._controls[claimed.id] = control
        try:
            value = self._call(task, claimed, args, kwargs, control)
        except AttemptTimedOut:
            assert claimed.timeout is not None
            self._finish_failed(
                task, claimed, timeout_error(claimed.timeout), None, log_extra
            )
            return None
        except futures.CancelledError:
            # An async task cancelled on its loop, normally by request.
            self._finish_cancelled(claimed, log_extra)
            return None
        except (Exception, SystemExit) as exc:
            if isinstance(exc, TaskCancelled):
                self._finish_cancelled(claimed, log_extra)
                return None
            error = _error_from_exception(exc)
            self._finish_failed(task, claimed, error, exc, log_extra)
            return None
        finally:
            with self._controls_lock:
                self._controls.pop(claimed.id, None)

        try:
            encoded = encode(value, "result")
        except SerializationError as exc:
            error = TaskError(
                error_code=ErrorCode.RESULT_NOT_SERIALIZABLE,
                message=f"The task's return value cannot be stored: {exc}",
                exception_type=_qualified_name(type(value)),
            )
            self._finish_failed(task, claimed, error, None, log_extra)
            return None

        completed, folded = self._complete(claimed, encoded, next_claim)
        if completed:
            logger.info(
                "Task id=%s name=%s attempt=%s completed in %.3fs",
                claimed.id,
                claimed.name,
                claimed.attempt,
                time.monotonic() - started,
                extra={"action": "task_completed", **log_extra},
            )
        return folded

    def _complete(
        self, claimed: ClaimedTask, encoded: Any, next_claim: AskNextClaim | None
    ) -> tuple[bool, CompletedAndClaimed | None]:
        """Store the result, in one statement with the next claim when one is
        wanted and the database can: whether the completion applied, and the
        claim's outcome (``None``: no claim ran)."""
        then = next_claim() if next_claim is not None else None
        if self.batcher is not None and claims.can_complete_and_claim(claimed.database):
            batched = self.batcher.complete_and_claim(claimed, encoded, then)
            return batched.completed, batched if then is not None else None

        if then is None or not claims.can_complete_and_claim(claimed.database):
            completed = self._write(
                claimed, "complete", lambda: claims.complete(claimed, encoded)
            )
            return completed, None

        outcome: list[CompletedAndClaimed] = []

        # Retried as one write: after an outage that struck once the statement
        # had committed (ending a claimed task that expired, say), the retry's
        # completion is fenced out and logged as such, and the task claimed
        # first is held unknowingly until the heartbeat's orphan sweep frees it.
        def complete_and_claim() -> bool:
            outcome[:] = [claims.complete_and_claim(claimed, encoded, then)]
            return outcome[0].completed

        completed = self._write(claimed, "complete", complete_and_claim)
        return completed, outcome[0]

    def _call(
        self,
        task: BaseTask[Any, Any],
        claimed: ClaimedTask,
        args: list[Any],
        kwargs: dict[str, Any],
        control: RunControl,
    ) -> Any:
        timeout = claimed.timeout if self.enforce_timeouts else None
        if task.is_async:
            return self._call_async(task, args, kwargs, control, timeout)
        if timeout is None:
            token = activate(control.context)
            try:
                return task.func(*args, **kwargs)
            finally:
                deactivate(token)
        return self._call_sync_with_timeout(task, args, kwargs, control, timeout)

    def _call_async(
        self,
        task: BaseTask[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
        control: RunControl,
        timeout: float | None,
    ) -> Any:
        async def run_in_context() -> Any:
            loop_task = asyncio.current_task()
            assert loop_task is not None
            control.attach(asyncio.get_running_loop(), loop_task)
            token = activate(control.context)
            try:
                if control.context.cancel_requested:
                    raise asyncio.CancelledError
                return await task.func(*args, **kwargs)
            finally:
                deactivate(token)

        future = self.event_loop.submit(run_in_context())
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():
                raise  # The task's own TimeoutError.
            control.request_cancel()
            # Let it unwind (finally blocks, async context managers).
            futures.wait([future], timeout=ASYNC_CANCEL_GRACE)
            raise AttemptTimedOut from None

    def _call_sync_with_timeout(
        self,
        task: BaseTask[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
        control: RunControl,
        timeout: float,
    ) -> Any:
        # The body runs in a thread of its own so that this slot can give up
        # on it at the deadline; a thread cannot be stopped from outside.
        outcome: futures.Future[Any] = futures.Future()

        def run_body() -> None:
            token = activate(control.context)
            try:
                outcome.set_result(task.func(*args, **kwargs))
            except BaseException as exc:
                outcome.set_exception(exc)
            finally:
                deactivate(token)

        body = threading.Thread(target=run_body, name="tasks-q-timed-task", daemon=True)
        body.start()
        try:
            return outcome.result(timeout)
        except TimeoutError:
            if outcome.done():
                raise  # The task's own TimeoutError.
            # A task that checks cancel_requested stops; others run on.
            control.context._cancel_requested.set()
            logger.warning(
                "Task id=%s timed out after %gs; its thread runs on and its "
                "outcome will be discarded",
                control.context.task_id,
                timeout,
                extra={
                    "action": "task_thread_abandoned",
                    "task_id": control.context.task_id,
                },
            )
            raise AttemptTimedOut from None

    def _finish_cancelled(
        self, claimed: ClaimedTask, log_extra: dict[str, Any]
    ) -> None:
        message = "The task was cancelled while it ran."
        if self._write(
            claimed, "cancel", lambda: claims.cancel_running(claimed, message)
        ):
            logger.info(
                "Task id=%s name=%s attempt=%s cancelled while running",
                claimed.id,
                claimed.name,
                claimed.attempt,
                extra={"action": "task_cancelled", **log_extra},
            )

    def _finish_failed(
        self,
        task: BaseTask[Any, Any] | None,
        claimed: ClaimedTask,
        error: TaskError,
        exc: BaseException | None,
        log_extra: dict[str, Any],
    ) -> None:
        delay = retry_delay(task, claimed, error, exc)
        if not self._write(claimed, "fail", lambda: claims.fail(claimed, error, delay)):
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
