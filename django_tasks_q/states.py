"""The states a task and an attempt move through."""

from django.db import models


class TaskStatus(models.TextChoices):
    PENDING = "PENDING"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @classmethod
    def finished(cls) -> frozenset[str]:
        """The states a task never leaves."""
        return frozenset({cls.COMPLETED, cls.FAILED, cls.CANCELLED, cls.EXPIRED})


class AttemptOutcome(models.TextChoices):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"
