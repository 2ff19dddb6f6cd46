"""Scenario 4: the running task of a SIGKILLed worker is rescued within
DEAD_WORKER_AFTER plus one sweep interval (and 2 s of lag), then completed
by another worker."""

from __future__ import annotations

import time

import pytest

from django_tasks_q.models import Task, TaskAttempt
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import wait_until
from tests.reliability import chaos
from tests.reliability.conftest import MakeCluster, Publish

pytestmark = pytest.mark.django_db(transaction=True)

TIMINGS = chaos.Timings(heartbeat_interval=0.2, dead_worker_after=1.0)


def test_sigkilled_workers_task_is_rescued_in_time_and_completed_elsewhere(
    make_cluster: MakeCluster, publish: Publish
) -> None:
    # The sweeper claims from another queue: it only rescues.
    victims = make_cluster(TIMINGS, name="victim", concurrency=1, queues="victim")
    sweepers = make_cluster(TIMINGS, name="sweeper", concurrency=1)
    (victim,) = victims.start(1)
    sweepers.start(1)
    [task_id] = chaos.send_probes(1, seconds=1.5, queue="victim")
    wait_until(
        lambda: chaos.read_executions().get(task_id),
        timeout=30,
        message="the probe to start on the victim",
    )

    injector = chaos.FaultInjector(victims)
    kill = injector.inject(chaos.FaultKind.KILL, victim)
    held_by_victim = Task.objects.filter(
        pk=task_id, status=TaskStatus.RUNNING, worker_id=victim.id
    )
    wait_until(lambda: not held_by_victim.exists(), timeout=30, interval=0.02)
    latency = time.time() - kill.at
    chaos.wait_settled(timeout=60)
    exit_codes = {**victims.stop(), **sweepers.stop()}

    report = chaos.check_invariants(
        "4 rescue latency", [task_id], victims, [kill], final_exit_codes=exit_codes
    )
    report.notes["rescue_seconds"] = round(latency, 3)
    publish(report)
    report.assert_clean()
    assert latency < TIMINGS.rescue_bound
    task = Task.objects.get(pk=task_id)
    assert (task.status, task.attempts, task.crashes) == (TaskStatus.COMPLETED, 2, 1)
    assert task.worker_id not in {victim.id, ""}
    first = TaskAttempt.objects.get(task_id=task_id, number=1)
    assert (first.worker_id, first.outcome) == (victim.id, AttemptOutcome.CRASHED)
    assert report.duplicates == report.explained == 1
