"""Tasks used by tests/test_worker*.py."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pydantic
from django.db import connection

from django_tasks_q import RetryPolicy, TaskFailure, current_task, task


class Point(pydantic.BaseModel):
    x: int
    y: int


@task
def multiply(a: int, b: int) -> int:
    return a * b


@task
def shift(point: Point, dx: int) -> Point:
    return Point(x=point.x + dx, y=point.y)


@task
async def double_async(value: int) -> dict[str, object]:
    await asyncio.sleep(0.01)
    return {
        "value": value * 2,
        "thread": threading.current_thread().name,
        "task_id": current_task().task_id,
    }


@task
def explode(message: str) -> None:
    raise ValueError(message)


@task
def rate_limited(retry_after: int) -> None:
    raise TaskFailure(
        "RATE_LIMITED", "The partner API asked to slow down.", {"after": retry_after}
    )


@task
def unserializable() -> object:
    return object()


@task
def whoami(hold_seconds: float = 0.0) -> dict[str, object]:
    """Report which worker ran this attempt, in which process.

    ``hold_seconds`` keeps the slot busy, so that a backlog lasts long enough
    for every worker sharing it to claim some.
    """
    time.sleep(hold_seconds)
    context = current_task()
    return {
        "worker_id": context.worker_id,
        "attempt": context.attempt,
        "pid": os.getpid(),
    }


@task(retry_policy=RetryPolicy.fixed(30, max_retries=1))
def always_fails_fixed() -> None:
    raise RuntimeError("still broken")


@task(retry_policy=RetryPolicy.fixed(0, max_retries=3))
def succeeds_on_attempt(attempt: int) -> dict[str, object]:
    context = current_task()
    if context.attempt is None or context.attempt < attempt:
        raise ConnectionError(f"attempt {context.attempt} fails")
    return {"attempt": context.attempt, "is_retry": context.is_retry}


@task(
    retry_policy=RetryPolicy.exponential(
        base_seconds=10, multiplier=3, max_retries=2, jitter=0
    ),
    auto_retry_for=(ConnectionError, "RATE_LIMITED"),
)
def call_partner(failure: str) -> str:
    """Fail the way ``failure`` names; only some of the ways are retried."""
    if failure == "connection":
        # A subclass of ConnectionError: matched with isinstance.
        raise ConnectionRefusedError("The partner refused the connection.")
    if failure == "rate":
        raise TaskFailure("RATE_LIMITED", "The partner asked to slow down.")
    if failure == "value":
        raise ValueError("The partner sent a reply that makes no sense.")
    return "answered"


@task
def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds}"


@task
def report_progress(release_path: str, timeout: float = 10.0) -> str:
    """Store progress, then wait until the test creates ``release_path``."""
    current_task().set_progress(1, 3, "first step done")

    deadline = time.monotonic() + timeout
    while not Path(release_path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_path} was never created")
        time.sleep(0.02)

    current_task().set_progress(3, 3, "all done")
    return "released"


@task
def backend_pid() -> int:
    """Return the PostgreSQL backend pid of this thread's connection."""
    connection.ensure_connection()
    pid: int = connection.connection.info.backend_pid
    return pid


@task
def count_session_visits() -> int:
    """Count the runs that used this database session, in a TEMP table.

    A temporary table lives as long as its connection, so a count above one
    proves the connection outlived the previous task.
    """
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS tq_visits (n INTEGER)")
        cursor.execute("INSERT INTO tq_visits (n) VALUES (1)")
        cursor.execute("SELECT COUNT(*) FROM tq_visits")
        (count,) = cursor.fetchone()
    return int(count)


@task
def query_in_thread() -> int | None:
    """Query from a thread of the task's own; return that thread's backend pid.

    The pid is ``None`` on SQLite, which has no server process.
    """
    pids: list[int | None] = []

    def work() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        info = getattr(connection.connection, "info", None)
        pids.append(getattr(info, "backend_pid", None))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return pids[0]
