"""A tasks module with the mistake that ``SEND_SUPPRESSED`` guards against."""

from __future__ import annotations

from django_tasks_q import task


@task
def greet(name: str) -> str:
    return f"Hello, {name}"


# Wrong on purpose: this would enqueue again every time a process starts.
greet.send("import time")
