"""Scenario 1: many workers share a few thousand short tasks, without faults.

Without faults, delivery is exactly once: one execution, one attempt and no
rescue per task, however many workers compete for the rows.
"""

from __future__ import annotations

import pytest

from tests.reliability import chaos
from tests.reliability.conftest import MakeCluster, Publish

pytestmark = pytest.mark.django_db(transaction=True)

# Liveness is not under test here: generous timings keep a busy machine from
# making a healthy worker look dead.
TIMINGS = chaos.Timings(heartbeat_interval=0.5, dead_worker_after=5.0)


def test_workers_run_every_task_exactly_once_without_faults(
    make_cluster: MakeCluster, publish: Publish
) -> None:
    # On PostgreSQL, eight workers of two slots stay well within the server's
    # connections: each holds two of its own and two a slot (Django's and the
    # probe's). More slots would not help: the run is CPU-bound.
    cluster = make_cluster(TIMINGS, name="once", concurrency=2)
    cluster.start(8 if chaos.on_postgresql() else 4)

    sent = chaos.send_probes(chaos.scaled(1500))
    chaos.wait_settled(timeout=300)
    exit_codes = cluster.stop()

    report = chaos.check_invariants(
        "1 exactly once", sent, cluster, exactly_once=True, final_exit_codes=exit_codes
    )
    publish(report)
    report.assert_clean()
    assert report.executions == report.tasks == len(sent)
    assert report.duplicates == 0


def test_every_attempt_holds_a_lease_token_of_its_own(
    make_cluster: MakeCluster,
) -> None:
    # Sent before the worker starts, so its first claim takes all four.
    sent = chaos.send_probes(4)
    cluster = make_cluster(TIMINGS, name="leases", concurrency=4)
    cluster.start(1)

    chaos.wait_settled(timeout=60)

    runs = [run for runs in chaos.read_executions().values() for run in runs]
    assert sorted(run.task_id for run in runs) == sorted(sent)
    assert len({run.lease_token for run in runs}) == len(runs)
