"""How ``runworker`` treats database connections: kept for its own threads,
closed for threads a task started."""

from __future__ import annotations

import signal

import pytest
from django.conf import settings
from django.db import connection

from tests.helpers import RunWorker, StartWorker, wait_until
from tests.taskapp.tasks.worker import (
    backend_pid,
    count_session_visits,
    query_in_thread,
)

pytestmark = pytest.mark.django_db(transaction=True)

requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="backend pids and pg_stat_activity exist on PostgreSQL only",
)

STRAYS_CLOSED = "Closed 1 database connection(s) left open by ended task threads"


def live_backends(pids: set[int]) -> set[int]:
    """Return which of ``pids`` are still connected PostgreSQL backends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [sorted(pids)]
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_worker_keeps_connection_across_tasks(run_worker: RunWorker) -> None:
    handles = [count_session_visits.send() for _ in range(3)]

    process = run_worker("--burst", "--concurrency", "1", "--poll-interval", "0.1")

    assert process.returncode == 0, process.stderr
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0
    # Each run found the TEMP table rows of the runs before it.
    assert [handle.get(timeout_ms=0).ok for handle in handles] == [1, 2, 3]


@requires_postgres
def test_worker_keeps_one_backend_per_thread(start_worker: StartWorker) -> None:
    worker = start_worker("--concurrency", "1", "--poll-interval", "0.1")
    handles = [backend_pid.send() for _ in range(4)]

    pids = {handle.get(timeout_ms=30_000).unwrap() for handle in handles}
    alive_while_running = live_backends(pids)
    worker.send_signal(signal.SIGTERM)
    exit_code = worker.wait(timeout=20)

    assert exit_code == 0
    assert len(pids) == 1
    assert alive_while_running == pids
    wait_until(lambda: not live_backends(pids), message="worker backends to end")


@requires_postgres
def test_worker_closes_connection_of_task_thread(start_worker: StartWorker) -> None:
    worker = start_worker("--concurrency", "1", "--poll-interval", "0.1")
    thread_handle = query_in_thread.send()
    slot_handle = backend_pid.send()

    thread_pid = thread_handle.get(timeout_ms=30_000).unwrap()
    slot_pid = slot_handle.get(timeout_ms=30_000).unwrap()

    assert thread_pid is not None
    assert thread_pid != slot_pid
    wait_until(
        lambda: not live_backends({thread_pid}),
        message=f"backend {thread_pid} of the task's thread to end",
    )
    assert live_backends({slot_pid}) == {slot_pid}
    assert STRAYS_CLOSED in worker.output()


def test_worker_logs_closing_connection_of_task_thread(
    run_worker: RunWorker,
) -> None:
    handle = query_in_thread.send()

    process = run_worker("--burst", "-v", "2", "--poll-interval", "0.1")

    assert process.returncode == 0, process.stderr
    assert handle.get(timeout_ms=0).is_ok()
    log = process.stderr
    assert STRAYS_CLOSED in log
    # Closed right after the task, not only when the worker shut down.
    assert log.index(STRAYS_CLOSED) < log.index("burst mode ends")
