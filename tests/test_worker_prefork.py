"""``runworker --pool prefork``: tasks in child processes, crashes contained."""

from __future__ import annotations

import json
import os
import signal

import pytest

from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import StartWorker, wait_until
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import (
    child_pid,
    child_pid_async,
    exit_process,
    hold,
    kill_my_worker,
    never_ends,
    segfault,
)

pytestmark = pytest.mark.django_db(transaction=True)

MAX_CRASHES = 2


def test_prefork_runs_sync_and_async_tasks_in_children(
    start_worker: StartWorker,
) -> None:
    worker = start_worker("--pool", "prefork", "--concurrency", "2")

    pids = {child_pid.send().get(timeout_ms=60_000).unwrap() for _ in range(4)}
    async_pid = child_pid_async.send().get(timeout_ms=20_000).unwrap()

    assert worker.process.pid not in pids
    assert async_pid != worker.process.pid
    assert add.send(2, 3).get(timeout_ms=20_000).unwrap() == 5
    assert os.getpid() not in pids


@pytest.mark.parametrize(
    ("poison", "exit_code"),
    [(exit_process, 3), (kill_my_worker, -signal.SIGKILL), (segfault, -signal.SIGSEGV)],
    ids=["os-exit", "self-kill", "segfault"],
)
def test_task_that_kills_its_child_ends_worker_crashed_and_spares_the_worker(
    worker_env: dict[str, str],
    start_worker: StartWorker,
    poison: object,
    exit_code: int,
) -> None:
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"MAX_CRASHES": MAX_CRASHES})
    worker = start_worker("--pool", "prefork", "--concurrency", "2")
    handle = poison.send()  # type: ignore[attr-defined]
    healthy = [add.send(n, n) for n in range(10)]

    result = handle.get(timeout_ms=90_000)

    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.WORKER_CRASHED
    assert f"exit code {exit_code}" in result.err.message
    row = Task.objects.get(pk=handle.task_id)
    assert (row.status, row.attempts, row.crashes) == (
        TaskStatus.FAILED,
        MAX_CRASHES,
        MAX_CRASHES,
    )
    outcomes = TaskAttempt.objects.filter(task=row).values_list("outcome", flat=True)
    assert set(outcomes) == {AttemptOutcome.CRASHED}
    assert [h.get(timeout_ms=30_000).unwrap() for h in healthy] == [
        n + n for n in range(10)
    ]
    assert worker.process.poll() is None


def test_never_ending_task_times_out_in_prefork(start_worker: StartWorker) -> None:
    start_worker("--pool", "prefork", "--concurrency", "1")

    result = never_ends.send().get(timeout_ms=90_000)

    assert result.err is not None, result
    assert result.err.error_code == ErrorCode.TASK_TIMEOUT
    assert add.send(1, 1).get(timeout_ms=60_000).unwrap() == 2


def test_prefork_drain_gives_back_long_tasks_and_exits_zero(
    start_worker: StartWorker,
) -> None:
    worker = start_worker(
        "--pool", "prefork", "--concurrency", "2", "--drain-timeout", "1"
    )
    short = hold.send(0.5)
    long = hold.send(60)
    wait_until(
        lambda: Task.objects.get(pk=long.task_id).status == TaskStatus.RUNNING,
        timeout=60,
    )

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=30) == 0
    assert short.get(timeout_ms=0).is_ok()
    given_back = Task.objects.get(pk=long.task_id)
    assert given_back.status == TaskStatus.PENDING
    attempt = TaskAttempt.objects.get(task=given_back)
    assert attempt.outcome == AttemptOutcome.INTERRUPTED
    assert attempt.error_code == ErrorCode.WORKER_STOPPED
