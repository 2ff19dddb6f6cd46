"""Cancelling a task: at once when it has not started, by request when it runs.

A task that has not started (PENDING, or CLAIMED by a worker that has not
begun it) ends ``CANCELLED`` in one UPDATE; the worker's later start write is
fenced out. A RUNNING task gets ``cancel_requested_at``; its worker notices
within a poll interval and stops it as far as its pool can (see
``docs/workers.md``, "Cancelling tasks").
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.functions import Coalesce, Now

from .codes import ErrorCode
from .models import Task
from .notifications import notify_finished
from .states import TaskStatus

logger = logging.getLogger("django_tasks_q.cancellation")


def cancel(task_id: str, database: str) -> bool:
    """Cancel one task; see ``TaskHandle.cancel()``."""
    tasks = Task.objects.using(database).filter(pk=task_id)

    with transaction.atomic(using=database):
        cancelled = tasks.filter(
            status__in=[TaskStatus.PENDING, TaskStatus.CLAIMED]
        ).update(
            status=TaskStatus.CANCELLED,
            finished_at=Now(),
            cancel_requested_at=Now(),
            lease_token=None,
            error_code=ErrorCode.TASK_CANCELLED,
            error_message="The task was cancelled before it started.",
        )
        requested = 0
        if cancelled:
            notify_finished(database, [task_id])
        else:
            requested = tasks.filter(status=TaskStatus.RUNNING).update(
                cancel_requested_at=Coalesce("cancel_requested_at", Now())
            )

    if cancelled:
        logger.info(
            "Task id=%s cancelled before it started",
            task_id,
            extra={"action": "task_cancelled", "task_id": task_id},
        )
    elif requested:
        logger.info(
            "Task id=%s is running; its worker was asked to cancel it",
            task_id,
            extra={"action": "task_cancel_requested", "task_id": task_id},
        )
    return bool(cancelled or requested)
