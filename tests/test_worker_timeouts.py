"""``@task(timeout=...)`` enforced by real workers, in both pools."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.reliability import (
    child_pid,
    overrun,
    overrun_async,
    overrun_twice,
    within_timeout,
)

pytestmark = pytest.mark.django_db(transaction=True)


def assert_timed_out(task_id: str) -> Task:
    row = Task.objects.get(pk=task_id)
    assert row.status == TaskStatus.FAILED
    assert row.error_code == ErrorCode.TASK_TIMEOUT
    assert "timeout of 0.5s" in row.error_message
    return row


def test_threads_pool_frees_the_slot_of_a_sync_task_past_its_timeout(
    start_worker: StartWorker,
) -> None:
    worker = start_worker("--concurrency", "1", "--poll-interval", "0.1")
    stuck = overrun.send(60)
    after = within_timeout.send()

    # The only slot is freed at the deadline, so the next task runs long
    # before the stuck one would return.
    assert after.get(timeout_ms=20_000).is_ok()
    result = stuck.get(timeout_ms=5_000)

    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.TASK_TIMEOUT
    assert_timed_out(stuck.task_id)
    attempt = TaskAttempt.objects.get(task_id=stuck.task_id)
    assert attempt.outcome == AttemptOutcome.FAILED
    assert attempt.error_code == ErrorCode.TASK_TIMEOUT
    assert "its thread runs on" in worker.output()


def test_async_task_past_its_timeout_is_cancelled(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker("--poll-interval", "0.1")
    marker = tmp_path / "cancelled"

    result = overrun_async.send(60, str(marker)).get(timeout_ms=20_000)

    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.TASK_TIMEOUT
    # The coroutine saw CancelledError at its await: it really stopped.
    assert marker.read_text() == "cancelled"


def test_timed_out_attempt_is_retried_by_its_policy(start_worker: StartWorker) -> None:
    start_worker("--poll-interval", "0.1")

    handle = overrun_twice.send(60)
    result = handle.get(timeout_ms=30_000)

    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.TASK_TIMEOUT
    row = Task.objects.get(pk=handle.task_id)
    assert row.attempts == 2
    outcomes = TaskAttempt.objects.filter(task=row).values_list("error_code", flat=True)
    assert list(outcomes) == [ErrorCode.TASK_TIMEOUT, ErrorCode.TASK_TIMEOUT]


def child_pids(worker: WorkerProcess) -> list[int]:
    """Pids of the children the worker started, in start order."""
    return [
        int(pid) for pid in re.findall(r"started child \d+ pid=(\d+)", worker.output())
    ]


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_prefork_kills_and_replaces_only_the_child_past_its_timeout(
    start_worker: StartWorker,
) -> None:
    worker = start_worker(
        "--pool", "prefork", "--concurrency", "2", "--poll-interval", "0.1"
    )
    wait_until(lambda: len(child_pids(worker)) == 2, timeout=60)
    first_children = child_pids(worker)

    stuck = overrun.send(60)
    wait_until(lambda: Task.objects.get(pk=stuck.task_id).started_at, timeout=20)
    # The sibling keeps serving while the stuck child runs.
    sibling = child_pid.send().get(timeout_ms=20_000).unwrap()
    result = stuck.get(timeout_ms=20_000)
    wait_until(lambda: len(child_pids(worker)) == 3, timeout=60)

    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.TASK_TIMEOUT
    assert_timed_out(stuck.task_id)
    [stuck_child] = set(first_children) - {sibling}
    assert not is_alive(stuck_child)
    assert is_alive(sibling)
    assert child_pid.send().get(timeout_ms=20_000).is_ok()
