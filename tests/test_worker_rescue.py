"""Heartbeats, and the rescue of tasks whose worker died, with real processes.

Workers here run with compressed timings: a heartbeat every 0.2 s and a
worker counted dead after 1 s of silence.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
import uuid

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from django_tasks_q import claims, liveness
from django_tasks_q.claims import ClaimedTask
from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt, Worker
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import hold, kill_my_worker

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT_INTERVAL = 0.2
DEAD_WORKER_AFTER = 1.0
MAX_CRASHES = 2
FAST_SETTINGS = {
    "HEARTBEAT_INTERVAL": HEARTBEAT_INTERVAL,
    "DEAD_WORKER_AFTER": DEAD_WORKER_AFTER,
    "MAX_CRASHES": MAX_CRASHES,
}


@pytest.fixture
def start_fast_worker(
    worker_env: dict[str, str], start_worker: StartWorker
) -> StartWorker:
    """Start workers that heartbeat every 0.2 s and count as dead after 1 s."""
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps(FAST_SETTINGS)

    def start(*args: str) -> WorkerProcess:
        return start_worker("--poll-interval", "0.1", *args)

    return start


def status_of(task_id: str) -> str:
    return Task.objects.get(pk=task_id).status


def test_worker_heartbeats_on_the_database_clock(
    start_fast_worker: StartWorker,
) -> None:
    start_fast_worker("--worker-id", "beating-1")
    wait_until(lambda: Worker.objects.filter(pk="beating-1").exists())
    row = Worker.objects.get(pk="beating-1")

    def beat_age() -> dt.timedelta:
        row.refresh_from_db()
        return row.last_heartbeat_at - row.started_at

    wait_until(lambda: beat_age() >= dt.timedelta(seconds=0.6), timeout=10)

    stale = Worker.objects.filter(
        pk="beating-1", last_heartbeat_at__lt=Now() - dt.timedelta(seconds=1)
    )
    assert not stale.exists()


def test_sigkilled_workers_task_is_rescued_and_run_again(
    start_fast_worker: StartWorker,
) -> None:
    start_fast_worker("--queues", "default", "--worker-id", "rescuer-1")
    victim = start_fast_worker("--queues", "slow", "--worker-id", "victim-1")
    handle = hold.using(queue="slow").send(3)
    wait_until(lambda: status_of(handle.task_id) == TaskStatus.RUNNING, timeout=15)

    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: status_of(handle.task_id) != TaskStatus.RUNNING, timeout=10)
    rescue_latency = time.monotonic() - killed_at

    rescued = Task.objects.get(pk=handle.task_id)
    first_attempt = TaskAttempt.objects.get(task=rescued, number=1)
    assert rescue_latency < DEAD_WORKER_AFTER + HEARTBEAT_INTERVAL + 2
    assert rescued.status == TaskStatus.PENDING
    assert rescued.crashes == 1
    assert rescued.error_code == ErrorCode.WORKER_CRASHED
    assert first_attempt.outcome == AttemptOutcome.CRASHED
    assert first_attempt.worker_id == "victim-1"

    start_fast_worker("--queues", "slow", "--worker-id", "victim-2")
    result = handle.get(timeout_ms=20_000)

    assert result.is_ok(), result
    finished = Task.objects.get(pk=handle.task_id)
    assert finished.attempts == 2
    assert finished.worker_id == "victim-2"


def test_long_task_on_a_healthy_worker_is_never_rescued(
    start_fast_worker: StartWorker,
) -> None:
    start_fast_worker("--queues", "default")
    runner = start_fast_worker("--queues", "slow")

    handle = hold.using(queue="slow").send(DEAD_WORKER_AFTER * 4)
    result = handle.get(timeout_ms=30_000)

    assert result.is_ok(), result
    finished = Task.objects.get(pk=handle.task_id)
    assert finished.attempts == 1
    assert finished.crashes == 0
    assert not TaskAttempt.objects.filter(outcome=AttemptOutcome.CRASHED).exists()
    assert "task_rescued" not in runner.output()


def test_task_that_keeps_killing_its_worker_ends_worker_crashed(
    start_fast_worker: StartWorker,
) -> None:
    start_fast_worker("--queues", "default")
    poison = kill_my_worker.using(queue="poison").send()
    healthy = add.send(2, 3)

    for _ in range(MAX_CRASHES):
        victim = start_fast_worker("--queues", "poison")
        assert victim.wait(timeout=30) == -signal.SIGKILL
        wait_until(lambda: status_of(poison.task_id) != TaskStatus.RUNNING)

    result = poison.get(timeout_ms=5_000)

    assert result.is_err()
    assert result.err is not None
    assert result.err.error_code == ErrorCode.WORKER_CRASHED
    failed = Task.objects.get(pk=poison.task_id)
    assert failed.status == TaskStatus.FAILED
    assert failed.crashes == 2
    assert failed.attempts == 2
    assert healthy.get(timeout_ms=5_000).unwrap() == 5


def test_tasks_of_a_worker_whose_row_is_gone_or_stale_are_rescued(
    start_fast_worker: StartWorker,
) -> None:
    stale = Worker.objects.create(
        id="stale-1", hostname="gone", pid=1, queues=["nowhere"], concurrency=1
    )
    Worker.objects.filter(pk=stale.pk).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(minutes=5)
    )
    claimed_by_ghost = Task.objects.create(
        name=add.name,
        args=[1, 1],
        status=TaskStatus.CLAIMED,
        worker_id="ghost-1",
        lease_token=uuid.uuid4(),
        attempts=1,
    )
    running_on_stale = Task.objects.create(
        name=add.name,
        args=[2, 2],
        status=TaskStatus.RUNNING,
        worker_id="stale-1",
        lease_token=uuid.uuid4(),
        attempts=1,
    )
    TaskAttempt.objects.create(
        task=running_on_stale, number=1, worker_id="stale-1", lease_token=uuid.uuid4()
    )

    start_fast_worker("--queues", "default")

    def both_completed() -> bool:
        return all(
            status_of(str(task.pk)) == TaskStatus.COMPLETED
            for task in (claimed_by_ghost, running_on_stale)
        )

    wait_until(both_completed, timeout=15)
    ghost = Task.objects.get(pk=claimed_by_ghost.pk)
    restarted = Task.objects.get(pk=running_on_stale.pk)
    assert (ghost.result, ghost.attempts, ghost.crashes) == (2, 1, 0)
    assert (restarted.result, restarted.attempts, restarted.crashes) == (4, 2, 1)
    assert TaskAttempt.objects.get(task=restarted, number=1).outcome == (
        AttemptOutcome.CRASHED
    )


def test_writes_with_a_lost_lease_are_fenced_out_and_counted() -> None:
    row = Task.objects.create(
        name=add.name,
        status=TaskStatus.RUNNING,
        worker_id="current-1",
        lease_token=uuid.uuid4(),
        attempts=2,
    )
    late = ClaimedTask(
        id=row.pk,
        name=row.name,
        queue=row.queue,
        args=[1, 2],
        kwargs={},
        attempt=1,
        max_attempts=1,
        lease_token=uuid.uuid4(),
        worker_id="old-1",
        database="default",
    )
    before = claims.fenced_out_count()

    applied = claims.complete(late, 3)

    row.refresh_from_db()
    assert applied is False
    assert claims.fenced_out_count() == before + 1
    assert row.status == TaskStatus.RUNNING
    assert row.result is None


def test_a_live_worker_gives_back_tasks_it_holds_without_knowing() -> None:
    # As left when the connection died while a claim or a start committed.
    long_ago = timezone.now() - dt.timedelta(minutes=1)
    known_lease = uuid.uuid4()

    def held(status: str, lease: uuid.UUID, claimed_at: dt.datetime) -> Task:
        return Task.objects.create(
            name=add.name,
            args=[1, 1],
            status=status,
            worker_id="alive-1",
            lease_token=lease,
            attempts=1,
            claimed_at=claimed_at,
        )

    lost_claim = held(TaskStatus.CLAIMED, uuid.uuid4(), long_ago)
    lost_start = held(TaskStatus.RUNNING, uuid.uuid4(), long_ago)
    TaskAttempt.objects.create(
        task=lost_start, number=1, worker_id="alive-1", lease_token=uuid.uuid4()
    )
    running = held(TaskStatus.RUNNING, known_lease, long_ago)
    just_claimed = held(TaskStatus.CLAIMED, uuid.uuid4(), timezone.now())

    released = liveness.release_orphans(
        worker_id="alive-1",
        held_leases={known_lease},
        database="default",
        older_than=5,
    )

    assert released == 2
    lost_claim.refresh_from_db()
    lost_start.refresh_from_db()
    assert (lost_claim.status, lost_claim.attempts) == (TaskStatus.PENDING, 0)
    assert (lost_start.status, lost_start.attempts) == (TaskStatus.PENDING, 1)
    assert lost_start.error_code == ErrorCode.OUTCOME_LOST
    attempt = TaskAttempt.objects.get(task=lost_start)
    assert attempt.outcome == AttemptOutcome.INTERRUPTED
    assert status_of(str(running.pk)) == TaskStatus.RUNNING
    assert status_of(str(just_claimed.pk)) == TaskStatus.CLAIMED
    # With nothing held, every old task of the worker is an orphan.
    assert (
        liveness.release_orphans(
            worker_id="alive-1", held_leases=set(), database="default", older_than=5
        )
        == 1
    )
