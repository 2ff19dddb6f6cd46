"""Scenario 7: SIGTERM drains a worker.

Running tasks that end within the drain timeout finish where they are; the
ones that do not are given back, their attempt closed as interrupted, for
another worker to run. Either way the worker exits 0.
"""

from __future__ import annotations

import signal

import pytest

from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import wait_until
from tests.reliability import chaos
from tests.reliability.conftest import MakeCluster, Publish

pytestmark = pytest.mark.django_db(transaction=True)

TIMINGS = chaos.Timings(heartbeat_interval=0.2, dead_worker_after=1.0)


def wait_running(count: int) -> list[chaos.Execution]:
    """Wait until ``count`` probes have started; return their executions."""

    def started() -> list[chaos.Execution]:
        runs = [run for runs in chaos.read_executions().values() for run in runs]
        return runs if len(runs) >= count else []

    return wait_until(started, timeout=30, message=f"{count} probes to start")


def test_sigterm_lets_running_short_tasks_finish(
    make_cluster: MakeCluster, publish: Publish
) -> None:
    cluster = make_cluster(TIMINGS, name="drained", concurrency=4, drain_timeout=20)
    (worker,) = cluster.start(1)
    sent = chaos.send_probes(4, seconds=1.5)
    wait_running(4)

    signalled_at = worker.signal(signal.SIGTERM)
    exit_code = worker.wait_exit(30)

    report = chaos.check_invariants(
        "7 drain finishes",
        sent,
        cluster,
        exactly_once=True,
        final_exit_codes={worker.id: exit_code},
    )
    publish(report)
    report.assert_clean()
    # The signal found all four running, and they ran to their end.
    for [run] in chaos.read_executions().values():
        assert run.finished_at is not None
        assert run.started_at < signalled_at < run.finished_at


def test_sigterm_gives_long_tasks_back_after_the_drain_timeout(
    make_cluster: MakeCluster, publish: Publish
) -> None:
    cluster = make_cluster(TIMINGS, name="handover", concurrency=2, drain_timeout=0.5)
    (first,) = cluster.start(1)
    sent = chaos.send_probes(2, seconds=1.5)
    wait_running(2)

    injector = chaos.FaultInjector(cluster, replace=False)
    terminate = injector.inject(chaos.FaultKind.TERMINATE, first)

    assert terminate.exit_code == 0, first.process.output()
    given_back = Task.objects.filter(pk__in=sent)
    assert {(t.status, t.error_code) for t in given_back} == {
        (TaskStatus.PENDING, ErrorCode.WORKER_STOPPED)
    }
    interrupted = TaskAttempt.objects.filter(task_id__in=sent)
    assert {(a.number, a.outcome, a.error_code) for a in interrupted} == {
        (1, AttemptOutcome.INTERRUPTED, ErrorCode.WORKER_STOPPED)
    }

    (second,) = cluster.start(1)
    chaos.wait_settled(timeout=60)
    exit_codes = cluster.stop()

    report = chaos.check_invariants(
        "7 drain gives back", sent, cluster, [terminate], final_exit_codes=exit_codes
    )
    publish(report)
    report.assert_clean()
    assert report.duplicates == report.explained == 2
    finished = Task.objects.filter(pk__in=sent)
    assert {(t.status, t.attempts, t.worker_id) for t in finished} == {
        (TaskStatus.COMPLETED, 2, second.id)
    }
