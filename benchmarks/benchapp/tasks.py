"""Benchmark tasks: they do nothing, so only the queue's own cost shows."""

import time

from django_tasks_q import task


@task
def noop() -> None:
    """Return at once."""


@task
def clock() -> float:
    """Return the time (seconds since the epoch) at which the body ran."""
    return time.time()
