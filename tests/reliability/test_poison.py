"""Scenario 6: poison tasks in a prefork worker while other tasks flow.

A task that exits its process, kills it, segfaults or never ends must end
with its own error code after a bounded number of attempts, and must not
stop the worker or the tasks around it.
"""

from __future__ import annotations

import json

import pytest

from django_tasks_q import TaskHandle
from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task
from django_tasks_q.states import TaskStatus
from tests.helpers import StartWorker
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import (
    exit_process,
    kill_my_worker,
    never_ends,
    segfault,
)

pytestmark = pytest.mark.django_db(transaction=True)

MAX_CRASHES = 2
HEALTHY_TASKS = 300


def test_poison_tasks_end_bounded_while_the_rest_keep_flowing(
    worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"MAX_CRASHES": MAX_CRASHES})
    worker = start_worker("--pool", "prefork", "--concurrency", "3")
    crashing: list[TaskHandle[None]] = [
        exit_process.send(),
        kill_my_worker.send(),
        segfault.send(),
    ]
    hanging = never_ends.send()
    healthy = add.send_many([((n, 1), {}) for n in range(HEALTHY_TASKS)])

    for handle in crashing:
        result = handle.get(timeout_ms=120_000)
        assert result.err is not None, result
        assert result.err.error_code == ErrorCode.WORKER_CRASHED
        row = Task.objects.get(pk=handle.task_id)
        assert (row.status, row.attempts, row.crashes) == (
            TaskStatus.FAILED,
            MAX_CRASHES,
            MAX_CRASHES,
        )
    timed_out = hanging.get(timeout_ms=60_000)
    assert timed_out.err is not None, timed_out
    assert timed_out.err.error_code == ErrorCode.TASK_TIMEOUT
    assert Task.objects.get(pk=hanging.task_id).attempts == 1

    results = [handle.get(timeout_ms=60_000) for handle in healthy]
    assert [result.unwrap() for result in results] == [
        n + 1 for n in range(HEALTHY_TASKS)
    ]
    assert worker.process.poll() is None
