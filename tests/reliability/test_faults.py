"""Scenario 2: random faults hit workers while tasks keep arriving.

Workers are SIGKILLed, SIGTERMed (in the long tier with a drain timeout
shorter than some tasks), frozen with SIGSTOP then continued, and, on
PostgreSQL, have their connections killed with ``pg_terminate_backend``; a
killed or terminated worker is replaced by a new one. Delivery stays
at-least-once with nothing lost: every task ends terminal, and every
duplicate execution is explained by a fault.

On PostgreSQL the scenario runs a second time with batched completions
(``COMPLETION_BATCH_WAIT``), whose longer window between a task's return and
its stored result the faults must not turn into a loss.

The long tier (``long_run.py``) runs this scenario for minutes.
"""

from __future__ import annotations

import dataclasses

import pytest
from django.db import connection

from tests.reliability import chaos
from tests.reliability.conftest import MakeCluster, Publish

pytestmark = pytest.mark.django_db(transaction=True)

# A dead worker is noticed within about 2 s; a busy machine can delay a
# heartbeat by much less than that, so no healthy worker looks dead. Crashes
# are allowed often enough that no task should reach the limit.
TIMINGS = chaos.Timings(heartbeat_interval=0.25, dead_worker_after=2.0, max_crashes=10)

#: Seconds of load in the quick tier; SQLite's share of the time budget also
#: pays for scenario 8.
QUICK_SECONDS = {"postgresql": 12, "sqlite": 6}


#: SIGTERM's drain timeout: shorter than the long probes, so that some are
#: given back and run again elsewhere.
DRAIN_TIMEOUT = 0.5

#: How long a SIGSTOP lasts: often past DEAD_WORKER_AFTER, to get the frozen
#: worker's tasks rescued and its late writes fenced out. On SQLite a frozen
#: worker may hold the only write lock and stall every heartbeat, which must
#: not get the tasks of live workers rescued.
STOP_DURATIONS = (0.3, 2.5 * TIMINGS.dead_worker_after)


@pytest.mark.parametrize(
    "completion_batch_wait",
    [
        pytest.param(0.0, id="one-by-one"),
        pytest.param(
            0.01,
            id="batched",
            marks=pytest.mark.skipif(
                connection.vendor != "postgresql",
                reason="completions are batched on PostgreSQL only",
            ),
        ),
    ],
)
def test_faults_under_load_lose_nothing_and_explain_every_duplicate(
    make_cluster: MakeCluster, publish: Publish, completion_batch_wait: float
) -> None:
    postgres = chaos.on_postgresql()
    timings = dataclasses.replace(TIMINGS, completion_batch_wait=completion_batch_wait)
    cluster = make_cluster(
        timings, name="faulty", concurrency=2, drain_timeout=DRAIN_TIMEOUT
    )
    cluster.start(8 if postgres else 4)
    injector = chaos.FaultInjector(cluster, stop_for=STOP_DURATIONS)
    durations = chaos.mixed_durations(injector.seed)

    injector.start()
    try:
        sent = chaos.send_steadily(
            rate=60 if postgres else 40,
            duration=chaos.load_seconds(QUICK_SECONDS[connection.vendor]),
            seconds_of=durations,
            batch=20,
        )
    finally:
        injector.stop()
    chaos.wait_settled(timeout=180)
    exit_codes = cluster.stop()

    report = chaos.check_invariants(
        "2 faults under load" + (", batched" if completion_batch_wait else ""),
        sent.task_ids,
        cluster,
        injector.faults,
        final_exit_codes=exit_codes,
    )
    report.notes.update(seed=injector.seed, send_errors=len(sent.errors))
    publish(report)
    assert sent.errors == []
    report.assert_clean()
    assert set(report.faults) == set(injector.kinds), report.faults
