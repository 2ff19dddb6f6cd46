"""Scenario 5: PostgreSQL restarted, or stopped for a while, under real workers.

These tests restart the server the suite runs on, with ``pg_ctlcluster``, so
they need PostgreSQL from Debian's packages and root (as in ``.ci/run``);
elsewhere they are skipped. Nothing may be lost: every task sent ends
``COMPLETED``, a task runs twice only when the outage ate the answer to one
of its writes, and claims resume within 5 s of the server accepting
connections again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection, connections

from django_tasks_q import TaskSendError
from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt, Worker
from django_tasks_q.states import AttemptOutcome, TaskStatus
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import hold

#: The claims of every worker must resume this soon after the server is back.
RESUME_WITHIN = 5.0

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="restarts a PostgreSQL server"
    ),
    pytest.mark.skipif(
        shutil.which("pg_ctlcluster") is None or os.geteuid() != 0,
        reason="restarting the server needs Debian's pg_ctlcluster, run as root",
    ),
]


class Server:
    """The PostgreSQL cluster that serves the test database."""

    def __init__(self) -> None:
        port = str(connection.settings_dict.get("PORT") or 5432)
        listing = subprocess.run(
            ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
        ).stdout
        for line in listing.splitlines():
            version, name, cluster_port, *_ = line.split()
            if cluster_port == port:
                self.version, self.name = version, name
                break
        else:
            pytest.skip(f"no local cluster listens on port {port}")

    def control(self, *args: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", self.version, self.name, *args],
            check=True,
            capture_output=True,
        )

    def restart(self, mode: str) -> float:
        """Restart in ``mode`` ("fast" or "immediate"); return when it answers."""
        self.control("restart", "-m", mode)
        return self.wait_until_up()

    def wait_until_up(self) -> float:
        """Block until a new connection succeeds; return that moment."""
        settings = connection.settings_dict
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(
                    host=settings["HOST"] or "127.0.0.1",
                    port=settings["PORT"] or 5432,
                    user=settings["USER"],
                    password=settings["PASSWORD"],
                    dbname=settings["NAME"],
                    connect_timeout=2,
                ).close()
                # Django's own connection died with the server.
                connections.close_all()
                return time.monotonic()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    yield server
    # A failed test must not leave the server down for the rest of the suite.
    if not _is_up(server):
        server.control("start")
    server.wait_until_up()


def _is_up(server: Server) -> bool:
    status = subprocess.run(
        ["pg_ctlcluster", server.version, server.name, "status"],
        capture_output=True,
        check=False,
    )
    return status.returncode == 0


class Sender(threading.Thread):
    """Sends ``add`` tasks at a steady pace, resending while the database is
    down, as an application would."""

    def __init__(self, per_second: float) -> None:
        super().__init__(name="restart-sender", daemon=True)
        self.pause = 1 / per_second
        self.sent: list[str] = []
        self.refused = 0
        #: Refusals that sending again would not cure: a test failure.
        self.errors: list[TaskSendError] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            number = 0
            while not self._stopping.is_set():
                try:
                    self.sent.append(add.send(number, 1).task_id)
                    number += 1
                except TaskSendError as exc:
                    if not exc.retryable:
                        self.errors.append(exc)
                    self.refused += 1
                    connections.close_all()
                self._stopping.wait(self.pause)
        finally:
            connections.close_all()

    def stop(self) -> list[str]:
        self._stopping.set()
        self.join(30)
        return self.sent


def start_workers(start_worker: StartWorker, count: int) -> list[WorkerProcess]:
    """Start ``count`` workers and wait until each has registered (a worker
    that cannot reach the database at start exits, as it should)."""
    ids = [f"restart-{n}" for n in range(1, count + 1)]
    workers = [
        start_worker("--worker-id", worker_id, "--poll-interval", "1")
        for worker_id in ids
    ]
    wait_until(lambda: Worker.objects.filter(pk__in=ids).count() == count, timeout=30)
    return workers


def seconds_to_first_claim(resumed_at: float) -> float:
    """Send a task and return how long after ``resumed_at`` it was started."""
    handle = add.send(1, 1)
    wait_until(
        lambda: Task.objects.filter(pk=handle.task_id, started_at__isnull=False),
        timeout=30,
        interval=0.02,
    )
    return time.monotonic() - resumed_at


def assert_nothing_lost(task_ids: list[str]) -> None:
    rows = Task.objects.filter(pk__in=task_ids)
    assert rows.count() == len(task_ids)
    assert set(rows.values_list("status", flat=True)) == {TaskStatus.COMPLETED}
    # A second attempt is explained by the outage: its first one was lost.
    for row in rows.filter(attempts__gt=1):
        first = TaskAttempt.objects.get(task=row, number=1)
        assert first.error_code == ErrorCode.OUTCOME_LOST, (row.pk, first.outcome)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_workers_outlive_a_restart_under_load_and_lose_nothing(
    server: Server, start_worker: StartWorker, mode: str
) -> None:
    workers = start_workers(start_worker, 2)
    sender = Sender(per_second=40)
    sender.start()
    wait_until(lambda: len(sender.sent) >= 40, timeout=30)

    resumed_at = server.restart(mode)
    resume_latency = seconds_to_first_claim(resumed_at)
    wait_until(lambda: len(sender.sent) >= 120, timeout=60)
    sent = sender.stop()

    wait_until(
        lambda: (
            Task.objects.filter(pk__in=sent, status=TaskStatus.COMPLETED).count()
            == len(sent)
        ),
        timeout=90,
        message="every task sent around the restart to complete",
    )
    assert resume_latency < RESUME_WITHIN, resume_latency
    assert not sender.errors
    assert_nothing_lost(sent)
    for worker in workers:
        assert worker.process.poll() is None, worker.output()[-3000:]


def test_an_outcome_reached_while_the_server_is_down_is_stored_once_it_is_back(
    server: Server, start_worker: StartWorker
) -> None:
    worker = start_worker("--worker-id", "outage-1", "--poll-interval", "0.2")
    wait_until(lambda: Worker.objects.filter(pk="outage-1").exists())
    handle = hold.send(1.5)
    wait_until(lambda: Task.objects.filter(pk=handle.task_id, status="RUNNING"))

    server.control("stop", "-m", "fast")
    time.sleep(4)  # The task ends while the server is down.
    server.control("start")
    server.wait_until_up()

    result = handle.get(timeout_ms=30_000)
    assert result.is_ok(), result
    assert Task.objects.get(pk=handle.task_id).attempts == 1
    assert "the complete write failed" in worker.output()


def test_an_outcome_past_the_write_budget_is_given_up_and_the_task_runs_again(
    server: Server, worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"WRITE_RETRY_BUDGET": 1})
    worker = start_worker("--worker-id", "budget-1", "--poll-interval", "0.2")
    wait_until(lambda: Worker.objects.filter(pk="budget-1").exists())
    handle = hold.send(1.5)
    wait_until(lambda: Task.objects.filter(pk=handle.task_id, status="RUNNING"))

    server.control("stop", "-m", "fast")
    time.sleep(4)  # The task ends, and the budget runs out, while it is down.
    server.control("start")
    server.wait_until_up()

    result = handle.get(timeout_ms=30_000)
    assert result.is_ok(), result
    row = Task.objects.get(pk=handle.task_id)
    assert row.attempts == 2
    first = TaskAttempt.objects.get(task=row, number=1)
    assert (first.outcome, first.error_code) == (
        AttemptOutcome.INTERRUPTED,
        ErrorCode.OUTCOME_LOST,
    )
    assert "gave up storing the outcome" in worker.output()
