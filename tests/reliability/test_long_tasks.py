"""Scenario 3: tasks that run several times DEAD_WORKER_AFTER, on healthy
workers, are never rescued: liveness is the worker's heartbeat, never the
age of a task."""

from __future__ import annotations

import pytest

from tests.reliability import chaos
from tests.reliability.conftest import MakeCluster, Publish

pytestmark = pytest.mark.django_db(transaction=True)

TIMINGS = chaos.Timings(heartbeat_interval=0.2, dead_worker_after=1.0)
TASK_SECONDS = 3 * TIMINGS.dead_worker_after


def test_long_tasks_on_healthy_workers_are_never_rescued(
    make_cluster: MakeCluster, publish: Publish
) -> None:
    cluster = make_cluster(TIMINGS, name="steady", concurrency=2)
    cluster.start(2)

    sent = chaos.send_probes(4, seconds=TASK_SECONDS)
    chaos.wait_settled(timeout=90)
    exit_codes = cluster.stop()

    report = chaos.check_invariants(
        "3 long tasks", sent, cluster, exactly_once=True, final_exit_codes=exit_codes
    )
    publish(report)
    report.assert_clean()
    runs = [run for runs in chaos.read_executions().values() for run in runs]
    assert len(runs) == 4
    for run in runs:
        assert run.finished_at is not None
        assert run.finished_at - run.started_at >= TASK_SECONDS
