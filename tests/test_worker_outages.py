"""Workers and their PostgreSQL connections: no transaction is left open
while a task runs, and killed connections are replaced without losing work.

(Restarts of the server itself are in tests/reliability/test_restarts.py.)
"""

from __future__ import annotations

import pytest
from django.db import connection

from django_tasks_q.models import Task
from django_tasks_q.states import TaskStatus
from django_tasks_q.worker.loop import application_name
from tests.helpers import StartWorker, wait_until
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import hold

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="pg_stat_activity and pg_terminate_backend exist only on PostgreSQL",
    ),
]


def worker_backends(worker_id: str) -> list[tuple[str, float]]:
    """(state, seconds in that state) of every server backend that the worker
    opened."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state, extract(epoch FROM clock_timestamp() - state_change) "
            "FROM pg_stat_activity WHERE application_name LIKE %s",
            [application_name(worker_id) + "%"],
        )
        return [(state, float(age)) for state, age in cursor.fetchall()]


def terminate_backends(worker_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE %s",
            [application_name(worker_id) + "%"],
        )
        (count,) = cursor.fetchone()
    return int(count)


def wait_running(task_id: str) -> None:
    wait_until(
        lambda: Task.objects.get(pk=task_id).status == TaskStatus.RUNNING,
        timeout=30,
        message=f"task {task_id} to run",
    )


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_no_worker_connection_is_idle_in_transaction_while_a_task_runs(
    start_worker: StartWorker, pool: str
) -> None:
    worker_id = f"no-idle-tx-{pool}"
    start_worker("--worker-id", worker_id, "--pool", pool, "--concurrency", "2")
    handles = [hold.send(2), hold.send(2)]
    for handle in handles:
        wait_running(handle.task_id)

    samples = []
    while any(Task.objects.get(pk=h.task_id).status == "RUNNING" for h in handles):
        samples.append(worker_backends(worker_id))

    # A short transaction is idle in transaction for an instant between its
    # statements; one held open around a task would stay so for seconds.
    held_open = [
        (state, age)
        for sample in samples
        for state, age in sample
        if state.startswith("idle in transaction") and age > 0.5
    ]
    # The worker's connections were seen, so the check could fail.
    assert samples
    assert min(len(sample) for sample in samples) >= 2, samples[:3]
    assert not held_open


def test_killed_connections_are_replaced_and_the_running_task_completes(
    start_worker: StartWorker,
) -> None:
    worker = start_worker(
        "--worker-id", "terminated-1", "--poll-interval", "0.2", "--concurrency", "1"
    )
    # A first task makes the slot open its connection (the claim starts a
    # task, so a fresh slot has none until it writes an outcome), and lets
    # the heartbeat and the listener connect.
    assert add.send(1, 1).get(timeout_ms=30_000).unwrap() == 2
    handle = hold.send(2)
    wait_running(handle.task_id)

    killed_while_running = terminate_backends("terminated-1")
    result = handle.get(timeout_ms=30_000)
    killed_while_idle = terminate_backends("terminated-1")
    after = add.send(20, 22).get(timeout_ms=30_000)

    assert killed_while_running >= 2  # The claim loop, the heartbeat, the slot.
    assert killed_while_idle >= 1
    assert result.is_ok(), result
    assert Task.objects.get(pk=handle.task_id).attempts == 1
    assert after.unwrap() == 42
    assert worker.process.poll() is None
    # The completion write met the dead connection and was retried.
    assert "the complete write failed" in worker.output()
