"""The completion that also claims the slot's next task, on PostgreSQL.

A busy thread pool slot stores its task's result and claims and starts its
next task in one statement (``claims.complete_and_claim``). The two halves
share a commit but not a fate: a completion fenced out by a lost lease must
not stop the claim, and a claimed task that may not run is ended, not run.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from django_tasks_q import claims
from django_tasks_q.claims import ClaimedTask, FinishedTask, NextClaim
from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.taskapp.tasks.worker import multiply

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="only PostgreSQL completes and claims in one statement",
    ),
]

WORKER = "folding-worker"
QUEUE = "fold"


def running(queue: str = QUEUE) -> ClaimedTask:
    """Send a task to ``queue`` and claim and start it as ``WORKER``."""
    multiply.using(queue=queue).send(2, 3)
    [claimed] = claims.claim(
        worker_id=WORKER, queues=[queue], limit=1, database="default", start=True
    )
    return claimed


def test_it_completes_the_task_and_starts_the_next_one() -> None:
    finished = running()
    waiting = multiply.using(queue=QUEUE).send(4, 5)

    outcome = claims.complete_and_claim(finished, 6, NextClaim(queues=[QUEUE]))

    assert outcome.completed
    assert outcome.filled
    row = Task.objects.get(pk=finished.id)
    assert (row.status, row.result) == (TaskStatus.COMPLETED, 6)
    attempt = TaskAttempt.objects.get(task_id=finished.id)
    assert attempt.outcome == AttemptOutcome.COMPLETED
    assert attempt.finished_at is not None

    next_task = outcome.next_task
    assert next_task is not None
    assert str(next_task.id) == waiting.task_id
    assert (next_task.args, next_task.attempt, next_task.started) == ([4, 5], 1, True)
    assert next_task.lease_token != finished.lease_token
    next_row = Task.objects.get(pk=next_task.id)
    assert next_row.status == TaskStatus.RUNNING
    assert (next_row.worker_id, next_row.lease_token) == (WORKER, next_task.lease_token)
    next_attempt = TaskAttempt.objects.get(task_id=next_task.id)
    assert next_attempt.outcome == AttemptOutcome.RUNNING
    assert next_attempt.lease_token == next_task.lease_token
    # The next task's own completion goes through the fence as usual.
    assert claims.complete(next_task, 20)
    assert waiting.get(timeout_ms=0).ok == 20


def test_with_nothing_ready_it_only_completes() -> None:
    finished = running()

    outcome = claims.complete_and_claim(finished, 6, NextClaim(queues=[QUEUE]))

    assert (outcome.completed, outcome.next_task, outcome.filled) == (
        True,
        None,
        False,
    )
    assert Task.objects.get(pk=finished.id).status == TaskStatus.COMPLETED


def test_a_fenced_out_completion_still_claims() -> None:
    finished = running()
    # Rescued meanwhile: back to the queue under no lease.
    Task.objects.filter(pk=finished.id).update(
        status=TaskStatus.PENDING, lease_token=None, worker_id=""
    )

    outcome = claims.complete_and_claim(finished, 6, NextClaim(queues=[QUEUE]))

    assert not outcome.completed
    row = Task.objects.get(pk=finished.id)
    assert row.result is None
    first_attempt = TaskAttempt.objects.get(task_id=finished.id, number=1)
    assert first_attempt.outcome == AttemptOutcome.RUNNING
    # The claim half took the rescued task itself, as a new attempt.
    assert outcome.next_task is not None
    assert outcome.next_task.id == finished.id
    assert outcome.next_task.attempt == 2
    assert row.status == TaskStatus.RUNNING
    assert row.lease_token == outcome.next_task.lease_token


def test_a_claimed_task_past_its_deadline_is_ended_not_run() -> None:
    finished = running()
    past = timezone.now() - dt.timedelta(minutes=1)
    expired = multiply.using(queue=QUEUE, good_until=past).send(1, 1)

    outcome = claims.complete_and_claim(finished, 6, NextClaim(queues=[QUEUE]))

    assert outcome.completed
    assert outcome.next_task is None
    # It took a task, so more may be ready: the slot claims again.
    assert outcome.filled
    row = Task.objects.get(pk=expired.task_id)
    assert (row.status, row.error_code) == (TaskStatus.EXPIRED, ErrorCode.TASK_EXPIRED)
    assert (row.attempts, row.started_at) == (0, None)
    assert not TaskAttempt.objects.filter(task_id=expired.task_id).exists()


def test_it_claims_only_from_the_queues_asked_for() -> None:
    finished = running()
    elsewhere = multiply.using(queue="other").send(1, 1)

    outcome = claims.complete_and_claim(finished, 6, NextClaim(queues=[QUEUE]))

    assert outcome.next_task is None
    assert Task.objects.get(pk=elsewhere.task_id).status == TaskStatus.PENDING


# Several slots' completions in one statement (COMPLETION_BATCH_WAIT).


def test_a_batch_completes_every_task_and_claims_one_per_asking_slot() -> None:
    first, second, third = running(), running(), running()
    waiting = [multiply.using(queue=QUEUE).send(n, 10) for n in range(2)]
    then = NextClaim(queues=[QUEUE])

    outcomes = claims.complete_many_and_claim(
        [
            FinishedTask(first, 6, then),
            FinishedTask(second, None, None),
            FinishedTask(third, {"six": 6}, then),
        ]
    )

    assert [outcome.completed for outcome in outcomes] == [True, True, True]
    results = dict(Task.objects.values_list("pk", "result").filter(status="COMPLETED"))
    assert results == {first.id: 6, second.id: None, third.id: {"six": 6}}
    closed = TaskAttempt.objects.filter(outcome=AttemptOutcome.COMPLETED)
    assert set(closed.values_list("task_id", flat=True)) == set(results)
    assert all(attempt.finished_at is not None for attempt in closed)

    # The slot that asked for nothing got nothing; the two others one each.
    assert outcomes[1].next_task is None
    assert not outcomes[1].filled
    claimed = [outcomes[0].next_task, outcomes[2].next_task]
    assert all(task is not None and task.started for task in claimed)
    assert {str(task.id) for task in claimed if task} == {
        handle.task_id for handle in waiting
    }
    assert outcomes[0].filled
    assert outcomes[2].filled
    for task in claimed:
        assert task is not None
        attempt = TaskAttempt.objects.get(task_id=task.id)
        assert (attempt.outcome, attempt.lease_token) == (
            AttemptOutcome.RUNNING,
            task.lease_token,
        )


def test_a_fenced_out_task_in_a_batch_rejects_only_its_own_result() -> None:
    kept, rescued = running(), running()
    Task.objects.filter(pk=rescued.id).update(
        status=TaskStatus.PENDING, lease_token=None, worker_id=""
    )
    then = NextClaim(queues=[QUEUE])

    outcomes = claims.complete_many_and_claim(
        [FinishedTask(kept, 1, then), FinishedTask(rescued, 2, then)]
    )

    assert [outcome.completed for outcome in outcomes] == [True, False]
    assert Task.objects.get(pk=kept.id).result == 1
    assert Task.objects.get(pk=rescued.id).result is None
    # The claim took the rescued task back, as its second attempt.
    assert outcomes[0].next_task is not None
    assert (outcomes[0].next_task.id, outcomes[0].next_task.attempt) == (
        rescued.id,
        2,
    )
    assert outcomes[1].next_task is None
    assert not outcomes[1].filled


def test_a_batch_claim_cut_short_by_an_expired_task_lets_the_slot_try_again() -> None:
    first, second = running(), running()
    past = timezone.now() - dt.timedelta(minutes=1)
    expired = multiply.using(queue=QUEUE, good_until=past).send(1, 1)
    ready = multiply.using(queue=QUEUE).send(2, 2)
    then = NextClaim(queues=[QUEUE])

    outcomes = claims.complete_many_and_claim(
        [FinishedTask(first, 1, then), FinishedTask(second, 2, then)]
    )

    assert Task.objects.get(pk=expired.task_id).status == TaskStatus.EXPIRED
    assert outcomes[0].next_task is not None
    assert str(outcomes[0].next_task.id) == ready.task_id
    # Both places were taken, one by a task that could not run: more may be
    # ready, so the second slot claims again.
    assert outcomes[1].next_task is None
    assert outcomes[1].filled
