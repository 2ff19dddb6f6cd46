"""The benchmark's driver for django-tasks-q itself.

``TasksQSystem`` implements the ``System`` protocol of ``harness.py`` with the
public API only: ``noop.send()``, ``noop.send_many()`` and ``runworker``
subprocesses (``--pool threads``), configured by ``benchmarks/settings.py``
and pointed at the database the harness created for the measurement.

- ``drain``: start the workers, wait until every one has registered its
  ``Worker`` row and gone idle, commit the backlog with one ``send_many()``,
  and wait until no task is pending or running. The time is from the first
  ``started_at`` to the last ``finished_at`` stored in the task table, so
  neither the workers' start-up nor the harness's polling counts.
- ``pickup_latency`` and ``latencies``: one idle worker, tasks sent one at
  a time, each after the previous ``get()`` returned, timed from the send
  to the task body's own clock reading and from the stored ``finished_at``
  to the return of ``get()`` (shared with ``benchmarks/latency.py``).

The helpers ``configure``, ``running_workers`` and ``one_at_a_time`` are
also used by ``latency.py`` and ``claim_scale.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.harness import (
    REPO_DIR,
    BenchDatabase,
    DrainMeter,
    DrainResult,
    SendResult,
    database_url,
    python_path_environment,
    tree_rss_mb,
)

#: Seconds a started worker gets to register itself.
START_TIMEOUT = 60.0

#: Seconds a worker is left alone after registering, so that its first
#: claim pass is over and it waits idle when the work arrives.
SETTLE_SECONDS = 1.0

#: 1 once nothing is left to do: no pending task (one probe of the claim
#: index) and no task held by a worker (the small held-tasks index).
_DONE_SQL = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM django_tasks_q_task
         WHERE status = 'PENDING' LIMIT 1) AS pending)
     + (SELECT count(*) FROM django_tasks_q_task
         WHERE status IN ('CLAIMED', 'RUNNING')) = 0
"""


def django_environment(database: BenchDatabase) -> dict[str, str]:
    """Environment variables that point ``benchmarks.settings`` (in this
    process or in a worker) at ``database``."""
    environment = {
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        **python_path_environment(),
    }
    if database.vendor == "postgresql":
        environment["DATABASE_URL"] = database_url(database)
        environment["BENCH_DATABASE_NAME"] = database.params["dbname"]
    else:
        environment["DATABASE_URL"] = ""
        environment["TASKS_Q_SQLITE_PATH"] = database.params["path"]
    return environment


def configure(database: BenchDatabase, *, migrate: bool = True) -> dict[str, str]:
    """Set up Django in this process for ``database`` (and create the tables
    unless ``migrate`` is false); return the environment workers need."""
    environment = django_environment(database)
    os.environ.update(environment)
    for path in (str(REPO_DIR / "testproject"), str(REPO_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)

    import django
    from django.core.management import call_command

    django.setup()
    if migrate:
        call_command("migrate", verbosity=0)
    return environment


@contextlib.contextmanager
def running_workers(
    environment: dict[str, str],
    *,
    processes: int = 1,
    concurrency: int = 4,
    settings: dict[str, Any] | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``processes`` ``runworker`` subprocesses of ``concurrency``
    threads each, yield them once all have registered and settled, and stop
    them with SIGTERM (their normal shutdown) afterwards.

    ``settings`` is merged into ``TASKS_Q`` in the workers, over what this
    process's ``TASKS_Q_BENCH`` holds, through the same variable, which
    ``benchmarks/settings.py`` reads. The
    workers' standard output goes to standard error, so that it never mixes
    with a measurement's JSON.
    """
    from django.db import connections

    from django_tasks_q.models import Worker

    env = {
        **os.environ,
        **environment,
        "TASKS_Q_BENCH": json.dumps(
            json.loads(os.environ.get("TASKS_Q_BENCH") or "{}") | (settings or {})
        ),
    }
    command = [
        sys.executable,
        "-m",
        "django",
        "runworker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "-v",
        "0",
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(processes):
            started.append(
                subprocess.Popen(command, env=env, cwd=REPO_DIR, stdout=sys.stderr)
            )

        deadline = time.monotonic() + START_TIMEOUT
        pids = {process.pid for process in started}
        while Worker.objects.filter(pid__in=pids).count() < len(pids):
            dead = [p for p in started if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"runworker exited with code {dead[0].returncode} at start."
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"runworker did not register within {START_TIMEOUT:.0f} s."
                )
            time.sleep(0.05)
        connections.close_all()
        time.sleep(SETTLE_SECONDS)
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        connections.close_all()


def one_at_a_time(count: int) -> tuple[list[float], list[float]]:
    """Send ``count`` tasks one at a time, each after the previous ``get()``
    returned; return the delays in seconds from the send's return (the row
    is committed) to the moment the task's body ran (the ``clock`` task
    returns it), and from the ``finished_at`` the worker stored to the
    return of ``get()``. Needs an idle worker running."""
    from benchmarks.benchapp.tasks import clock
    from django_tasks_q.models import Task

    starts, gets = [], []
    for _ in range(count):
        handle = clock.send()
        committed_at = time.time()
        result = handle.get(timeout_ms=10_000)
        got_at = time.time()
        if result.is_err():
            raise RuntimeError(f"A benchmark task failed: {result.err}")

        finished_at = Task.objects.get(pk=handle.task_id).finished_at
        assert finished_at is not None
        starts.append(result.unwrap() - committed_at)
        gets.append(got_at - finished_at.timestamp())
        time.sleep(0.01)  # Let the worker go back to sleep.
    return starts, gets


class TasksQSystem:
    """django-tasks-q, driven through ``send()``, ``send_many()`` and
    ``runworker``."""

    name = "django-tasks-q"

    def __init__(self) -> None:
        self.database: BenchDatabase | None = None
        self.environment: dict[str, str] = {}

    def prepare(self, database: BenchDatabase) -> None:
        self.database = database
        self.environment = configure(database)

    def send_one_at_a_time(self, count: int) -> SendResult:
        from django.db import connection

        from benchmarks.benchapp.tasks import noop

        connection.ensure_connection()
        begin = time.perf_counter()
        for _ in range(count):
            noop.send()
        return SendResult(count, time.perf_counter() - begin)

    def send_bulk(self, count: int) -> SendResult:
        from django.db import connection

        from benchmarks.benchapp.tasks import noop

        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * count
        connection.ensure_connection()
        begin = time.perf_counter()
        noop.send_many(calls)
        return SendResult(count, time.perf_counter() - begin)

    def drain(self, count: int, *, processes: int, concurrency: int) -> DrainResult:
        from django.db import connections
        from django.db.models import Max, Min

        from benchmarks.benchapp.tasks import noop
        from django_tasks_q.models import Task

        assert self.database is not None
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * count
        with running_workers(
            self.environment, processes=processes, concurrency=concurrency
        ) as workers:
            meter = DrainMeter(self.database, [worker.pid for worker in workers])
            meter.start()
            noop.send_many(calls)
            connections.close_all()
            meter.wait_for(_DONE_SQL, 1)
            meter.stop()

        completed = Task.objects.filter(status="COMPLETED").count()
        if completed != count:
            raise RuntimeError(f"Only {completed} of {count} tasks completed.")
        span = Task.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
        connections.close_all()
        seconds = (span["last"] - span["first"]).total_seconds()
        return meter.result(count, seconds)

    def latencies(self, count: int) -> tuple[list[float], list[float]]:
        """Send-to-start and finish-to-get, in seconds, with one idle worker
        of concurrency 4 (``TASKS_Q`` defaults, so ``LISTEN`` on PostgreSQL)."""
        with running_workers(self.environment, processes=1, concurrency=4):
            return one_at_a_time(count)

    def pickup_latency(self, count: int) -> list[float]:
        return self.latencies(count)[0]

    def idle_rss_mb(self) -> float:
        with running_workers(self.environment, processes=1, concurrency=4) as [worker]:
            time.sleep(3)
            return tree_rss_mb(worker.pid)
