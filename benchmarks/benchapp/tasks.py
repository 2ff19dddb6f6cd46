"""Benchmark tasks: they do nothing, so only the queue's own cost shows."""

from django_tasks_q import task


@task
def noop() -> None:
    """Return at once."""
