"""Scenario 9: a completion write races the rescue of the same attempt.

A fake worker with a stale heartbeat holds a running task; its completion
and a rescue sweep start together, released by one barrier. The fenced
writes must let exactly one of them win: either the task completed and was
not rescued, or it was rescued (back to PENDING with a crashed attempt) and
the completion was rejected. Never both, never neither.

Both ways occur without any help on both databases (about one round in
three is rescued first on PostgreSQL, one in two on SQLite), so neither side
is delayed on purpose.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_tasks_q import claims, liveness
from django_tasks_q.claims import ClaimedTask, NextClaim
from django_tasks_q.models import Task, TaskAttempt, Worker
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.reliability import chaos
from tests.reliability.conftest import Publish

pytestmark = pytest.mark.django_db(transaction=True)

ITERATIONS = 500
STALE_WORKER = "race-stale"
MAX_CRASHES = 1_000_000

COMPLETED_FIRST = "completed, not rescued"
RESCUED_FIRST = "rescued, completion rejected"

#: (task status, crashes, attempt outcome) after each way a round may end.
AFTER_COMPLETION = (TaskStatus.COMPLETED, 0, AttemptOutcome.COMPLETED)
AFTER_RESCUE = (TaskStatus.PENDING, 1, AttemptOutcome.CRASHED)


class Racer(threading.Thread):
    """Runs ``action`` on the round's task each time the barrier releases it.

    The thread keeps one database connection for all rounds, opened before
    the first one, so no round's timing includes a connect.
    """

    def __init__(
        self, barrier: threading.Barrier, action: Callable[[ClaimedTask], Any]
    ) -> None:
        super().__init__(name=f"racer-{action.__name__}", daemon=True)
        self.barrier = barrier
        self.action = action
        self.claimed: ClaimedTask | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection.ensure_connection()
            while True:
                self.barrier.wait()
                if self.claimed is None:
                    return
                try:
                    self.result = self.action(self.claimed)
                except Exception as exc:
                    self.error = exc
                self.barrier.wait()
        finally:
            connection.close()


def stale_worker() -> None:
    Worker.objects.create(
        id=STALE_WORKER, hostname="nowhere", pid=os.getpid(), concurrency=1
    )
    Worker.objects.filter(pk=STALE_WORKER).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(hours=1)
    )


def running_task(number: int) -> ClaimedTask:
    """Send a task to a queue of its own and start it as the stale worker."""
    queue = f"race-{number}"
    [task_id] = chaos.send_probes(1, queue=queue)
    [claimed] = claims.claim(
        worker_id=STALE_WORKER, queues=[queue], limit=1, database="default"
    )
    assert str(claimed.id) == task_id
    assert claims.start(claimed)
    return claimed


def complete(claimed: ClaimedTask) -> bool:
    return claims.complete(claimed, claimed.attempt)


def complete_and_claim(claimed: ClaimedTask) -> bool:
    """The completion a busy slot writes on PostgreSQL, with its next claim
    (of an empty queue, so that the rescued task is not claimed back)."""
    then = NextClaim(queues=[f"{claimed.queue}-next"])
    return claims.complete_and_claim(claimed, claimed.attempt, then).completed


def rescue(claimed: ClaimedTask) -> set[str]:
    """Sweep as a worker does; it finds the round's task by its stale worker."""
    rescues = liveness.rescue_abandoned(
        database="default", dead_worker_after=60, max_crashes=MAX_CRASHES
    )
    return {rescue.task_id for rescue in rescues}


def outcome_of(claimed: ClaimedTask, completed: bool, rescued: bool) -> str:
    """Name the way the round ended, or describe how it broke the fence."""
    task = Task.objects.get(pk=claimed.id)
    attempt = TaskAttempt.objects.get(task_id=claimed.id, number=claimed.attempt)
    state = (task.status, task.crashes, attempt.outcome)

    if (completed, rescued, state) == (True, False, AFTER_COMPLETION):
        return COMPLETED_FIRST
    if (completed, rescued, state) == (False, True, AFTER_RESCUE):
        return RESCUED_FIRST
    return (
        f"complete returned {completed}, rescued={rescued}, "
        f"then task {task.status} with {task.crashes} crash(es), "
        f"attempt {attempt.outcome}"
    )


@pytest.mark.parametrize("completion", [complete, complete_and_claim])
def test_completion_racing_a_rescue_ends_exactly_one_way(
    publish: Publish, completion: Callable[[ClaimedTask], bool]
) -> None:
    if completion is complete_and_claim and not chaos.on_postgresql():
        pytest.skip("only PostgreSQL completes and claims in one statement")
    stale_worker()
    barrier = threading.Barrier(3, timeout=60)
    completer, rescuer = Racer(barrier, completion), Racer(barrier, rescue)
    completer.start()
    rescuer.start()

    outcomes: Counter[str] = Counter()
    try:
        for number in range(chaos.scaled(ITERATIONS)):
            claimed = running_task(number)
            completer.claimed = rescuer.claimed = claimed
            barrier.wait()
            barrier.wait()

            assert completer.error is None
            assert rescuer.error is None
            outcomes[
                outcome_of(claimed, completer.result, str(claimed.id) in rescuer.result)
            ] += 1
    finally:
        completer.claimed = rescuer.claimed = None
        barrier.wait()
        completer.join()
        rescuer.join()

    report = chaos.Report(
        f"9 {completion.__name__} races rescue", tasks=sum(outcomes.values())
    )
    report.notes.update(outcomes)
    broken = set(outcomes) - {COMPLETED_FIRST, RESCUED_FIRST}
    for outcome in broken:
        report.violate(f"{outcomes[outcome]} round(s) ended: {outcome}")
    publish(report)
    report.assert_clean()
    if chaos.on_postgresql():
        assert outcomes[COMPLETED_FIRST] > 0, outcomes
        assert outcomes[RESCUED_FIRST] > 0, outcomes
