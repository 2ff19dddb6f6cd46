"""``handle.cancel()`` against real workers, before and while tasks run."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from django_tasks_q import TaskHandle
from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import RunWorker, StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import (
    hold,
    hold_async,
    ignore_cancel,
    stop_when_cancelled,
)

pytestmark = pytest.mark.django_db(transaction=True)


def wait_running(handle: TaskHandle[Any]) -> None:
    wait_until(
        lambda: Task.objects.get(pk=handle.task_id).status == TaskStatus.RUNNING,
        timeout=60,
        message=f"task {handle.task_id} to run",
    )


def assert_cancelled(handle: TaskHandle[Any]) -> None:
    result = handle.get(timeout_ms=20_000)
    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.TASK_CANCELLED
    assert Task.objects.get(pk=handle.task_id).status == TaskStatus.CANCELLED


def test_pending_task_is_cancelled_at_once_and_never_runs(
    run_worker: RunWorker,
) -> None:
    handle = add.send(1, 2)
    kept = add.send(3, 4)

    assert handle.cancel() is True
    process = run_worker("--burst")

    assert process.returncode == 0, process.stderr
    assert_cancelled(handle)
    row = Task.objects.get(pk=handle.task_id)
    assert row.attempts == 0
    assert row.cancel_requested_at is not None
    assert kept.get(timeout_ms=0).unwrap() == 7


def test_finished_or_unknown_task_cannot_be_cancelled(run_worker: RunWorker) -> None:
    handle = add.send(1, 2)
    run_worker("--burst")

    assert handle.cancel() is False
    assert TaskHandle("00000000-0000-7000-8000-000000000000").cancel() is False
    assert handle.get(timeout_ms=0).unwrap() == 3


def test_running_async_task_is_cancelled(start_worker: StartWorker) -> None:
    start_worker("--poll-interval", "0.1")
    handle = hold_async.send(60)
    wait_running(handle)

    assert asyncio.run(handle.acancel()) is True

    assert_cancelled(handle)
    attempt = TaskAttempt.objects.get(task_id=handle.task_id)
    assert attempt.outcome == AttemptOutcome.CANCELLED


def test_running_sync_task_that_checks_is_cancelled(start_worker: StartWorker) -> None:
    start_worker("--poll-interval", "0.1")
    handle = stop_when_cancelled.send(60)
    wait_running(handle)

    assert handle.cancel() is True

    assert_cancelled(handle)


def test_running_sync_task_that_ignores_the_request_completes_in_a_thread(
    start_worker: StartWorker,
) -> None:
    start_worker("--poll-interval", "0.1")
    handle = ignore_cancel.send(1.5)
    wait_running(handle)

    assert handle.cancel() is True

    assert handle.get(timeout_ms=20_000).unwrap() == "finished"


def test_prefork_kills_the_child_of_a_cancelled_task(start_worker: StartWorker) -> None:
    worker = start_worker("--pool", "prefork", "--concurrency", "1")
    handle = ignore_cancel.send(60)
    wait_running(handle)

    assert handle.cancel() is True

    assert_cancelled(handle)
    # The slot got a new child and keeps working.
    assert add.send(2, 2).get(timeout_ms=60_000).unwrap() == 4
    assert worker.output().count("started child 1") == 2


def test_cancel_requested_task_that_goes_back_to_the_queue_is_not_run_again(
    worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps(
        {"HEARTBEAT_INTERVAL": 0.2, "DEAD_WORKER_AFTER": 1.0}
    )
    victim: WorkerProcess = start_worker("--queues", "slow")
    handle = hold.using(queue="slow").send(60)
    wait_running(handle)
    # The worker dies, then the request comes: nobody passes it on, and no
    # other worker runs yet to rescue the task first. (Stopping the worker
    # instead could leave it holding SQLite's write lock.)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert handle.cancel() is True

    start_worker("--queues", "slow", "--poll-interval", "0.1")

    assert_cancelled(handle)
    row = Task.objects.get(pk=handle.task_id)
    assert row.attempts == 1
