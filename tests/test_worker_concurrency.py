"""Several ``runworker`` processes sharing one queue run each task exactly once."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from django_tasks_q import TaskStatus
from django_tasks_q.models import Task, TaskAttempt, Worker
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.worker import whoami

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 3
CONCURRENCY = 4
TASKS = 300


def start_workers(start_worker: StartWorker, count: int) -> list[WorkerProcess]:
    """Start ``count`` workers and wait until each has registered."""
    workers = [
        start_worker(
            "--concurrency",
            str(CONCURRENCY),
            "--poll-interval",
            "0.1",
            "--worker-id",
            f"crowd-{number}",
        )
        for number in range(count)
    ]
    wait_until(
        lambda: Worker.objects.count() == count,
        timeout=30,
        message=f"{count} workers to register",
    )
    return workers


def stop_workers(workers: list[WorkerProcess]) -> list[int]:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    return [worker.wait(timeout=30) for worker in workers]


def test_workers_run_every_task_exactly_once(start_worker: StartWorker) -> None:
    workers = start_workers(start_worker, WORKERS)

    handles = whoami.send_many([((), {}) for _ in range(TASKS)])
    wait_until(
        lambda: Task.objects.finished().count() == TASKS,
        timeout=90,
        interval=0.2,
        message=f"{TASKS} tasks to finish",
    )
    exit_codes = stop_workers(workers)

    assert exit_codes == [0] * WORKERS, [worker.output() for worker in workers]
    rows = list(Task.objects.all())
    assert len(rows) == TASKS
    assert {row.status for row in rows} == {TaskStatus.COMPLETED}
    assert {row.attempts for row in rows} == {1}
    assert TaskAttempt.objects.count() == TASKS
    assert set(TaskAttempt.objects.values_list("number", flat=True)) == {1}
    assert set(TaskAttempt.objects.values_list("outcome", flat=True)) == {"COMPLETED"}
    assert {str(row.pk) for row in rows} == {handle.task_id for handle in handles}


def test_workers_record_who_ran_each_task(start_worker: StartWorker) -> None:
    workers = start_workers(start_worker, WORKERS)

    # Each task holds its slot briefly: busy slots claim their own next task,
    # so without it two workers can drain the backlog before the third polls.
    handles = whoami.send_many([((), {"hold_seconds": 0.02}) for _ in range(TASKS)])
    results = [handle.get(timeout_ms=90_000) for handle in handles]
    exit_codes = stop_workers(workers)

    assert exit_codes == [0] * WORKERS
    pids = dict(Worker.objects.values_list("id", "pid"))
    row_workers = {str(pk): w for pk, w in Task.objects.values_list("id", "worker_id")}
    attempt_workers = {
        str(task_id): worker_id
        for task_id, worker_id in TaskAttempt.objects.values_list("task", "worker_id")
    }
    ran_by: Counter[str] = Counter()
    for handle, result in zip(handles, results, strict=True):
        assert result.is_ok(), result.err
        assert result.ok is not None
        worker_id = str(result.ok["worker_id"])
        assert result.ok["attempt"] == 1
        assert result.ok["pid"] == pids[worker_id]
        assert row_workers[handle.task_id] == worker_id
        assert attempt_workers[handle.task_id] == worker_id
        ran_by[worker_id] += 1
    # Every worker took part, so the claims really did race each other.
    assert set(ran_by) == set(pids)
    for worker in workers:
        output = worker.output()
        assert "lost its lease" not in output
        assert "Traceback" not in output
