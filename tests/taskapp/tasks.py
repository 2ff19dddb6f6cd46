"""Tasks the test suite sends to real workers."""

from __future__ import annotations

from django_tasks_q import task


@task
def add(a: int, b: int) -> int:
    return a + b
