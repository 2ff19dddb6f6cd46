"""Scenario 8: on SQLite, four workers and a steady sender share one file.

SQLite lets one writer at a time; every other one waits for the lock. The
wait must stay inside the library: the sender never gets a TaskSendError,
no task fails, no outcome is lost, and nothing is lost or run twice.

The long tier (``long_run.py``) runs this scenario for minutes.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter

import pytest
from django.db import connection

from tests.helpers import wait_until
from tests.reliability import chaos
from tests.reliability.conftest import MakeCluster, Publish

pytestmark = pytest.mark.django_db(transaction=True)

TIMINGS = chaos.Timings(heartbeat_interval=0.5, dead_worker_after=5.0)
RATE = 50
QUICK_SECONDS = 20

FAST_TIMINGS = chaos.Timings(heartbeat_interval=0.2, dead_worker_after=1.0)

SQLITE_ONLY = "Scenario 8 is about SQLite's single write lock; SQLite only."


def lock_errors_by_record(logs: dict[str, str]) -> Counter[str]:
    """Count the log records that mention a locked database, by first line
    without its timestamp: which part of the worker met the lock."""
    found: Counter[str] = Counter()
    for text in logs.values():
        for record in chaos.log_records(text):
            if "database is locked" in record:
                first_line = record.splitlines()[0]
                found[first_line.split(": ", 1)[-1][:120]] += 1
    return found


def test_sqlite_keeps_up_with_a_steady_sender_without_lock_errors(
    make_cluster: MakeCluster, publish: Publish
) -> None:
    if chaos.on_postgresql():
        pytest.skip(SQLITE_ONLY)
    cluster = make_cluster(TIMINGS, name="contended", concurrency=2)
    cluster.start(4)

    sent = chaos.send_steadily(rate=RATE, duration=chaos.load_seconds(QUICK_SECONDS))
    chaos.wait_settled(timeout=120)
    exit_codes = cluster.stop()

    report = chaos.check_invariants(
        "8 SQLite steady sender",
        sent.task_ids,
        cluster,
        exactly_once=True,
        final_exit_codes=exit_codes,
    )
    locked = lock_errors_by_record(cluster.logs())
    report.notes.update(send_errors=len(sent.errors), lock_errors_logged=dict(locked))
    publish(report)
    assert sent.errors == []
    assert len(sent.task_ids) == round(RATE * chaos.load_seconds(QUICK_SECONDS))
    report.assert_clean()


def test_write_lock_held_past_dead_worker_after_rescues_no_live_workers_task(
    make_cluster: MakeCluster,
) -> None:
    # A SIGSTOPped worker that holds the write lock does the same, in
    # scenario 2; here the test holds it, to pin the bug deterministically.
    if chaos.on_postgresql():
        pytest.skip(SQLITE_ONLY)
    # Both probes must still run when the lock is released, so that their
    # completions do not get through before a sweep.
    cluster = make_cluster(FAST_TIMINGS, name="blocked", concurrency=1)
    cluster.start(2)
    sent = chaos.send_probes(2, seconds=2.5)
    wait_until(
        lambda: len(chaos.read_executions()) == 2,
        timeout=30,
        message="both probes to start",
    )

    blocker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    time.sleep(1.5 * FAST_TIMINGS.dead_worker_after)
    blocker.execute("COMMIT")
    blocker.close()
    chaos.wait_settled(timeout=60)
    exit_codes = cluster.stop()

    report = chaos.check_invariants(
        "8 write lock held",
        sent,
        cluster,
        exactly_once=True,
        final_exit_codes=exit_codes,
    )
    report.assert_clean()
