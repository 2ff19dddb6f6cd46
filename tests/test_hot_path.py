"""The cost of a task on the worker's hot path: round trips and query plans.

Throughput is measured by ``benchmarks/`` (timings do not belong in tests);
what a test can pin is what makes it fast: how many statements and commits a
busy worker sends per task, that the claim walks its partial index instead
of scanning or sorting the table, and that the plan PostgreSQL keeps for a
prepared completion (made without its values) finds rows by their keys.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from django_tasks_q import claims
from django_tasks_q.claims import NextClaim
from django_tasks_q.models import Task, TaskAttempt, Worker
from tests.helpers import StartWorker, wait_until
from tests.taskapp.statements import STATEMENT_LOG_VARIABLE
from tests.taskapp.tasks.worker import whoami

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 300

#: Round trips (statements plus explicit commits) per task of a busy worker.
#: PostgreSQL: one autocommitted statement that completes a task and claims
#: and starts the slot's next, plus a margin for the first claims, heartbeats
#: and the last idle polls. SQLite: the ORM's claim transaction (BEGIN,
#: SELECT, UPDATE, INSERT, COMMIT) and completion transaction (BEGIN, two
#: UPDATEs, COMMIT).
ROUND_TRIPS_PER_TASK = {"postgresql": 1.1, "sqlite": 9.2}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def drain_logging_statements(
    start_worker: StartWorker, worker_env: dict[str, str], log: Path
) -> list[str]:
    """Let a worker of 4 threads drain ``TASKS`` tasks sent at once; return
    the statements and commits it sent meanwhile, once they all completed."""
    worker_env[STATEMENT_LOG_VARIABLE] = str(log)
    worker = start_worker("--concurrency", "4")
    wait_until(
        lambda: Worker.objects.exists() and "tasks_q" in log.read_text(),
        timeout=30,
        message="the worker to start",
    )
    time.sleep(1)  # Past its first claim pass and heartbeat: idle.
    before = len(_lines(log))

    handles = whoami.send_many([((), {}) for _ in range(TASKS)])
    wait_until(
        lambda: Task.objects.finished().count() == TASKS,
        timeout=60,
        interval=0.1,
        message=f"{TASKS} tasks to finish",
    )
    during = _lines(log)[before:]
    worker.send_signal(15)
    assert worker.wait(timeout=30) == 0, worker.output()

    assert all(handle.get(timeout_ms=0).is_ok() for handle in handles)
    # The log saw the drain: every task takes a statement, or a share of one.
    assert during
    return during


def test_a_busy_worker_sends_few_statements_per_task(
    start_worker: StartWorker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    during = drain_logging_statements(
        start_worker, worker_env, tmp_path / "statements.log"
    )

    per_task = len(during) / TASKS
    assert per_task <= ROUND_TRIPS_PER_TASK[connection.vendor], (
        f"{per_task:.2f} round trips per task:\n" + "\n".join(during[:40])
    )
    assert len(during) >= TASKS


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the PostgreSQL claim statement"
)


@postgresql_only
def test_batched_completions_share_statements_and_commits(
    start_worker: StartWorker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Long enough that every slot joins each batch even on a loaded machine;
    # a batch goes as soon as all busy slots have joined.
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"COMPLETION_BATCH_WAIT": 0.2})

    during = drain_logging_statements(
        start_worker, worker_env, tmp_path / "statements.log"
    )

    # Unbatched, every task takes one statement (see the test above); four
    # slots sharing each batch take about a quarter.
    per_task = len(during) / TASKS
    assert per_task <= 0.5, f"{per_task:.2f} round trips per task"


def _fill(pending: int, finished: int, queues: list[str]) -> None:
    """Many finished rows and some pending ones, in one statement each."""
    table = Task._meta.db_table
    columns = (
        "id, name, queue, priority, status, args, kwargs, run_after, attempts,"
        " max_attempts, crashes, worker_id, error_code, error_message,"
        " exception_type, traceback"
    )
    with connection.cursor() as cursor:
        for status, count in (("COMPLETED", finished), ("PENDING", pending)):
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "
                f"SELECT gen_random_uuid(), 'noop', (%s::text[])[1 + n %% %s], 0,"
                f" %s, '[]', '{{}}', now() - interval '1 minute', 0, 1, 0,"
                f" '', '', '', '', '' FROM generate_series(1, %s) AS n",
                [queues, len(queues), status, count],
            )
        cursor.execute(f"ANALYZE {table}")


def _plan(sql: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of ``sql``, rolled back: the plan that really ran."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, parameters)
        (document,) = cursor.fetchone()
        transaction.set_rollback(True)
    plans = json.loads(document) if isinstance(document, str) else document
    plan: dict[str, Any] = plans[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


@postgresql_only
@pytest.mark.parametrize("queues", [["default"], ["default", "mail", "reports"]])
def test_the_claim_walks_the_claim_index_and_stops_after_n_rows(
    queues: list[str],
) -> None:
    _fill(pending=3_000, finished=30_000, queues=queues)
    Worker.objects.create(
        id="w-plan", hostname="h", pid=1, queues=queues, concurrency=4
    )
    limit = 4

    plan = _plan(
        *claims.postgresql_claim(
            start=True, queues=queues, limit=limit, worker_id="w-plan"
        )
    )

    nodes = _nodes(plan)
    task_scans = [
        node for node in nodes if node.get("Relation Name") == Task._meta.db_table
    ]
    assert task_scans, json.dumps(plan, indent=1)
    ready_scans = [
        node for node in task_scans if node.get("Index Name") == "tasks_q_claim_idx"
    ]
    assert len(ready_scans) == 1, json.dumps(plan, indent=1)
    [ready] = ready_scans
    assert ready["Node Type"] == "Index Scan"
    # One ordered walk per queue, each stopped by the limit: never a scan of
    # every pending row.
    assert ready["Actual Loops"] == len(queues)
    assert ready["Actual Rows"] <= limit
    assert not [node for node in task_scans if "Seq Scan" in node["Node Type"]]
    # The sort above the walks orders at most n rows per queue.
    for node in nodes:
        if node["Node Type"] == "Sort":
            assert node["Actual Rows"] <= limit * len(queues)


def _generic_plan(sql: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN of ``sql`` on the plan PostgreSQL caches for it as a prepared
    statement, which it makes without the parameters' values."""
    names: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    statement = re.sub(r"%\((\w+)\)s", numbered, sql)
    arguments = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        # Put back on failure too: the connection serves the next tests.
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute(f"PREPARE generic_plan AS {statement}")
            try:
                cursor.execute(
                    f"EXPLAIN (FORMAT JSON) EXECUTE generic_plan({arguments})",
                    [parameters[name] for name in names],
                )
                (document,) = cursor.fetchone()
            finally:
                cursor.execute("DEALLOCATE generic_plan")
        finally:
            cursor.execute("RESET plan_cache_mode")
    plans = json.loads(document) if isinstance(document, str) else document
    plan: dict[str, Any] = plans[0]["Plan"]
    return plan


@postgresql_only
def test_a_completion_planned_without_its_values_finds_the_attempt_by_its_key() -> None:
    # A nearly empty attempt table, as on a fresh database: the estimates
    # then make a plan that joins attempts to the completed row scan the
    # attempt index by number alone.
    whoami.send()
    whoami.send()
    [running] = claims.claim(
        worker_id="w-plan", queues=["default"], limit=1, database="default", start=True
    )
    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, *args: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, *args)

    with connection.execute_wrapper(capture):
        claims.complete_and_claim(running, None, NextClaim(queues=["default"]))
    [(sql, parameters)] = statements

    plan = _generic_plan(sql, parameters)

    attempt_scans = [
        node
        for node in _nodes(plan)
        if node.get("Relation Name") == TaskAttempt._meta.db_table
        and "Scan" in node["Node Type"]
    ]
    assert attempt_scans, json.dumps(plan, indent=1)
    for scan in attempt_scans:
        assert scan["Node Type"] == "Index Scan", json.dumps(plan, indent=1)
        assert "task_id = " in scan["Index Cond"], json.dumps(scan, indent=1)


@postgresql_only
def test_the_claim_planned_without_its_values_still_walks_the_claim_index() -> None:
    _fill(pending=3_000, finished=30_000, queues=["default", "mail"])

    plan = _generic_plan(
        *claims.postgresql_claim(
            start=True, queues=["default", "mail"], limit=4, worker_id="w-plan"
        )
    )

    task_scans = [
        node
        for node in _nodes(plan)
        if node.get("Relation Name") == Task._meta.db_table
        and "Scan" in node["Node Type"]
    ]
    assert [scan.get("Index Name") for scan in task_scans] == [
        "tasks_q_claim_idx",
        "django_tasks_q_task_pkey",
    ], json.dumps(plan, indent=1)
