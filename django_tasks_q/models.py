"""The tables behind the queue: tasks, their attempts, and workers."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from .ids import uuid7
from .states import AttemptOutcome, TaskStatus


class TaskQuerySet(models.QuerySet["Task"]):
    def pending(self) -> TaskQuerySet:
        return self.filter(status=TaskStatus.PENDING)

    def ready(self, queues: list[str]) -> TaskQuerySet:
        """Pending tasks in ``queues`` whose ``run_after`` has passed, in claim
        order: highest priority first, then earliest ``run_after``, then id."""
        return (
            self.pending()
            .filter(queue__in=queues, run_after__lte=Now())
            .order_by("-priority", "run_after", "id")
        )

    def finished(self) -> TaskQuerySet:
        return self.filter(status__in=TaskStatus.finished())


class Task(models.Model):
    """One sent task, from enqueue to its final state."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=255)
    queue = models.CharField(max_length=48, default="default")
    priority = models.IntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING
    )

    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)

    enqueued_at = models.DateTimeField(db_default=Now())
    run_after = models.DateTimeField(db_default=Now())
    good_until = models.DateTimeField(null=True, blank=True)

    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    crashes = models.PositiveIntegerField(
        default=0, help_text="Attempts that ended with their worker's death."
    )
    timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds one attempt may run."
    )

    worker_id = models.CharField(max_length=255, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress = models.JSONField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When handle.cancel() reached it running."
    )

    result = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_data = models.JSONField(null=True, blank=True)
    exception_type = models.CharField(max_length=255, blank=True)
    traceback = models.TextField(blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-enqueued_at"]
        indexes = [
            # Serves the claim query only: finished rows never enter it, so
            # claims stay fast however many finished tasks the table keeps.
            models.Index(
                F("queue"),
                F("priority").desc(),
                F("run_after"),
                F("id"),
                name="tasks_q_claim_idx",
                condition=Q(status="PENDING"),
            ),
            # Serves a worker's look for the next scheduled task of a queue,
            # so it can sleep until then: one index probe per queue.
            models.Index(
                F("queue"),
                F("run_after"),
                name="tasks_q_schedule_idx",
                condition=Q(status="PENDING"),
            ),
            # Serves the rescue sweep: tasks held by some worker, by worker.
            models.Index(
                fields=["worker_id"],
                name="tasks_q_held_idx",
                condition=Q(status__in=["CLAIMED", "RUNNING"]),
            ),
            models.Index(fields=["status", "enqueued_at"], name="tasks_q_status_idx"),
            models.Index(fields=["name", "enqueued_at"], name="tasks_q_name_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.id}"


class TaskAttempt(models.Model):
    """One execution of a task by a worker."""

    # No index of its own: tasks_q_attempt_unique on (task, number) serves
    # every lookup by task, and one index fewer is one write fewer per task.
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    number = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=255)
    lease_token = models.UUIDField()
    outcome = models.CharField(
        max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.RUNNING
    )
    started_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    exception_type = models.CharField(max_length=255, blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "number"], name="tasks_q_attempt_unique"
            )
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.task_id}"


class Worker(models.Model):
    """One ``runworker`` process start; ``id`` is never reused."""

    id = models.CharField(primary_key=True, max_length=255)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField()
    started_at = models.DateTimeField(db_default=Now())
    last_heartbeat_at = models.DateTimeField(db_default=Now())
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return self.id
