"""Worker liveness: heartbeats, and the rescue of tasks held by dead workers.

Each worker heartbeats its own row on the database clock. A task held by a
worker is rescued only when that worker's heartbeat is older than
``DEAD_WORKER_AFTER``, when the worker recorded its stop, or when its row is
gone; never because the task runs long. Every worker sweeps, and ``SKIP
LOCKED`` keeps two sweepers from rescuing one task twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from .claims import ClaimedTask
from .codes import ErrorCode
from .dbclock import ago, from_now
from .models import Task, TaskAttempt
from .models import Worker as WorkerRow
from .notifications import notify_finished
from .registry import registry
from .states import AttemptOutcome, TaskStatus

logger = logging.getLogger("django_tasks_q.liveness")

#: Tasks one sweep rescues at most; the next sweep takes the rest.
RESCUE_BATCH_SIZE = 100

_RESCUE_FIELDS = (
    "id",
    "name",
    "status",
    "worker_id",
    "lease_token",
    "attempts",
    "max_attempts",
    "crashes",
)


def heartbeat(worker_id: str, database: str) -> bool:
    """Record that the worker is alive; ``False`` if its row is gone."""
    updated = (
        WorkerRow.objects.using(database)
        .filter(pk=worker_id)
        .update(last_heartbeat_at=Now())
    )
    return bool(updated)


@dataclass(frozen=True, slots=True)
class Rescue:
    """What a sweep did with one task of a dead worker."""

    task_id: str
    worker_id: str
    status: str
    crashes: int


def rescue_abandoned(
    *, database: str, dead_worker_after: float, max_crashes: int
) -> list[Rescue]:
    """Give back, or fail, the tasks held by workers that are dead."""
    workers = WorkerRow.objects.using(database)
    dead = workers.filter(
        Q(last_heartbeat_at__lt=ago(dead_worker_after)) | Q(stopped_at__isnull=False)
    ).values("id")

    with transaction.atomic(using=database):
        abandoned = list(
            Task.objects.using(database)
            .filter(status__in=[TaskStatus.CLAIMED, TaskStatus.RUNNING])
            .filter(Q(worker_id__in=dead) | ~Q(worker_id__in=workers.values("id")))
            .select_for_update(skip_locked=True)
            .only(*_RESCUE_FIELDS)[:RESCUE_BATCH_SIZE]
        )
        rescues = [
            _rescue(task, database, max_crashes, f"Worker {task.worker_id} died")
            for task in abandoned
        ]

    for rescue in rescues:
        logger.warning(
            "Task id=%s was held by dead worker id=%s; now %s after %s crash(es)",
            rescue.task_id,
            rescue.worker_id,
            rescue.status,
            rescue.crashes,
            extra={
                "action": "task_rescued",
                "task_id": rescue.task_id,
                "dead_worker_id": rescue.worker_id,
                "status": rescue.status,
            },
        )
    return rescues


#: What undoes a claim that never started: the attempt it counted, too.
_UNCLAIMED: dict[str, Any] = {"claimed_at": None, "attempts": F("attempts") - 1}


def _back_to_queue() -> dict[str, Any]:
    """The fields that return a held task to the queue, claimable at once."""
    return {
        "status": TaskStatus.PENDING,
        "lease_token": None,
        "worker_id": "",
        "run_after": Now(),
    }


def _fenced(task: Task, database: str) -> Any:
    """The rows an UPDATE about ``task`` may change: only while it still has
    the status and the lease it was read with."""
    return Task.objects.using(database).filter(
        pk=task.pk, status=task.status, lease_token=task.lease_token
    )


def release_orphans(
    *,
    worker_id: str,
    held_leases: set[uuid.UUID],
    database: str,
    older_than: float,
) -> int:
    """Give back tasks that this live worker holds without knowing it.

    When the connection dies as a claim or a start commits, the worker never
    hears that it now holds the task, and no one else would rescue it while
    the worker's heartbeat is fresh. Such a task carries a lease the worker
    is not running; rows claimed in the last ``older_than`` seconds are left
    alone, since their claim may not be registered yet.
    """
    orphans = list(
        Task.objects.using(database)
        .filter(
            worker_id=worker_id,
            status__in=[TaskStatus.CLAIMED, TaskStatus.RUNNING],
            claimed_at__lt=ago(older_than),
        )
        .exclude(lease_token__in=held_leases)
        .only("id", "status", "lease_token", "attempts")
    )
    reason = (
        f"Worker {worker_id} lost the database's answer to a write about this "
        "attempt and never ran it to the end."
    )
    error = {"error_code": ErrorCode.OUTCOME_LOST, "error_message": reason}

    released = 0
    for task in orphans:
        with transaction.atomic(using=database):
            fenced = _fenced(task, database)
            if task.status == TaskStatus.CLAIMED:
                updated = fenced.update(**_UNCLAIMED, **_back_to_queue())
            else:
                updated = fenced.update(**_back_to_queue(), **error)
                TaskAttempt.objects.using(database).filter(
                    task_id=task.pk, number=task.attempts
                ).update(outcome=AttemptOutcome.INTERRUPTED, finished_at=Now(), **error)
        released += updated
        if updated:
            logger.warning(
                "Task id=%s was held by worker id=%s without its knowledge; "
                "it goes back to the queue",
                task.pk,
                worker_id,
                extra={
                    "action": "task_orphan_released",
                    "task_id": str(task.pk),
                    "worker_id": worker_id,
                },
            )
    return released


def record_crash(
    claimed: ClaimedTask, *, max_crashes: int, cause: str
) -> Rescue | None:
    """Count the death of the process that ran ``claimed``, as a rescue would.

    A prefork worker calls this when a child dies under a task, without
    waiting for a heartbeat to go stale. ``None`` when the attempt had
    already ended.
    """
    with transaction.atomic(using=claimed.database):
        task = (
            Task.objects.using(claimed.database)
            .filter(
                pk=claimed.id,
                lease_token=claimed.lease_token,
                status__in=[TaskStatus.CLAIMED, TaskStatus.RUNNING],
            )
            .select_for_update()
            .only(*_RESCUE_FIELDS)
            .first()
        )
        if task is None:
            return None
        rescue = _rescue(task, claimed.database, max_crashes, cause)

    logger.warning(
        "Task id=%s: %s; now %s after %s crash(es)",
        rescue.task_id,
        cause,
        rescue.status,
        rescue.crashes,
        extra={
            "action": "task_crashed",
            "task_id": rescue.task_id,
            "worker_id": rescue.worker_id,
            "status": rescue.status,
        },
    )
    return rescue


def _rescue(task: Task, database: str, max_crashes: int, cause: str) -> Rescue:
    # The row is locked, but the update stays fenced like every other write:
    # it applies only to the lease the dead worker held.
    fenced = _fenced(task, database)
    back_to_queue = _back_to_queue()

    if task.status == TaskStatus.CLAIMED:
        # Never started, so it could not have killed its worker.
        fenced.update(**back_to_queue, **_UNCLAIMED)
        return Rescue(str(task.pk), task.worker_id, TaskStatus.PENDING, task.crashes)

    crashes = task.crashes + 1
    message = (
        f"{cause} while running attempt {task.attempts} "
        f"(crash {crashes} of at most {max_crashes})."
    )
    error = {"error_code": ErrorCode.WORKER_CRASHED, "error_message": message}

    if crashes < max_crashes:
        fenced.update(**back_to_queue, **error, crashes=crashes)
        status = TaskStatus.PENDING
    elif (retry_in := _crash_retry_delay(task)) is not None:
        back_to_queue["run_after"] = from_now(retry_in)
        fenced.update(**back_to_queue, **error, crashes=crashes)
        status = TaskStatus.PENDING
    else:
        fenced.update(
            status=TaskStatus.FAILED, finished_at=Now(), crashes=crashes, **error
        )
        notify_finished(database, [task.pk])
        status = TaskStatus.FAILED

    TaskAttempt.objects.using(database).filter(
        task_id=task.pk, number=task.attempts
    ).update(
        outcome=AttemptOutcome.CRASHED,
        finished_at=Now(),
        error_code=ErrorCode.WORKER_CRASHED,
        error_message=message,
    )
    return Rescue(str(task.pk), task.worker_id, status, crashes)


def _crash_retry_delay(task: Task) -> float | None:
    """Past the crash limit, a task retries only if it asked to for crashes."""
    definition = registry.get(task.name)
    if definition is None or definition.retry_policy is None:
        return None
    if ErrorCode.WORKER_CRASHED not in definition.auto_retry_for:
        return None
    if task.attempts >= task.max_attempts:
        return None
    return definition.retry_policy.delay(task.attempts)
