"""Durable, database-backed background tasks for Django.

::

    from django_tasks_q import task

    @task
    def send_welcome(user_id: int) -> str: ...

    handle = send_welcome.send(42)
    result = handle.get(timeout_ms=5000)
"""

from .codes import ErrorCode
from .context import TaskContext, current_task
from .exceptions import (
    TaskCancelled,
    TaskFailure,
    TaskRegistrationError,
    TaskSendError,
    TasksQError,
    UnwrapError,
)
from .handle import TaskHandle
from .results import TaskError, TaskInfo, TaskResult
from .retry import RetryPolicy
from .states import TaskStatus
from .task import AsyncTask, BaseTask, Task, TaskSender, task

__all__ = [
    "AsyncTask",
    "BaseTask",
    "ErrorCode",
    "RetryPolicy",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskFailure",
    "TaskHandle",
    "TaskInfo",
    "TaskRegistrationError",
    "TaskResult",
    "TaskSendError",
    "TaskSender",
    "TaskStatus",
    "TasksQError",
    "UnwrapError",
    "current_task",
    "task",
]
