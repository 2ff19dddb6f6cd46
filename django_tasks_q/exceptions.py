"""Exceptions raised by django_tasks_q; all derive from ``TasksQError``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from .codes import ErrorCode

if TYPE_CHECKING:
    from .results import TaskError


class TasksQError(Exception):
    """Root of every exception this library raises."""


class TaskRegistrationError(TasksQError, ImproperlyConfigured):
    """A ``@task`` declaration is invalid, for example a duplicate name."""


class TaskSendError(TasksQError):
    """A task could not be sent; ``code`` says why and nothing was stored.

    ``retryable`` is true only for ``ENQUEUE_FAILED`` caused by an error that
    may go away, such as a lost connection or a locked database.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        task_name: str,
        parameter: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task_name = task_name
        self.parameter = parameter
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"TaskSendError(code={self.code.value!r}, message={self.message!r})"


class TaskFailure(TasksQError):
    """Raise inside a task to fail it with an error code of your own.

    The code is stored on the task, returned by ``TaskHandle.get()`` as
    ``TaskError.error_code`` and matched by the strings in
    ``auto_retry_for``::

        raise TaskFailure("RATE_LIMITED", "The API said to slow down.")
    """

    def __init__(self, error_code: str, message: str = "", data: Any = None) -> None:
        super().__init__(message or error_code)
        self.error_code = error_code
        self.message = message or error_code
        self.data = data


class TaskCancelled(TaskFailure):
    """The task stopped because it was cancelled; it ends ``CANCELLED``.

    Raised by ``current_task().raise_if_cancelled()``; a task may also raise
    it itself to end as cancelled rather than failed.
    """

    def __init__(self, message: str = "The task was cancelled.") -> None:
        super().__init__(ErrorCode.TASK_CANCELLED, message)


class UnwrapError(TasksQError):
    """``unwrap()`` was called on an error result, or ``unwrap_err()`` on a
    successful one."""

    def __init__(self, message: str, error: TaskError | None = None) -> None:
        super().__init__(message)
        self.error = error
