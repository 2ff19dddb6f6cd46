"""Prepared statements on PostgreSQL for the statements every task runs.

The claim, start, completion and send statements are prepared on the server
the first time they run on a connection; Django's own queries stay as Django
sends them, and a database declared as pooled, a setting, or a server that
loses a statement turns preparation off without losing a task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_tasks_q import claims, prepared
from django_tasks_q.claims import NextClaim
from django_tasks_q.exceptions import TaskSendError
from django_tasks_q.models import Task
from django_tasks_q.states import TaskStatus
from tests.taskapp.tasks.worker import multiply

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="prepared statements of PostgreSQL"
    ),
]

WORKER = "preparing-worker"


@pytest.fixture(autouse=True)
def fresh_session() -> Iterator[None]:
    """Each test starts on a connection without prepared statements, and with
    preparation not given up."""
    connection.close()
    prepared._given_up.clear()
    yield
    prepared._given_up.clear()
    connection.close()


def prepared_statements() -> dict[str, int]:
    """Each statement prepared on this session, with how many times it ran."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements"
        )
        return dict(cursor.fetchall())


def run_one_task_through_the_hot_path() -> None:
    """Send two tasks, claim one, then complete it and claim the other."""
    multiply.send(2, 3)
    multiply.send(4, 5)
    [first] = claims.claim(
        worker_id=WORKER, queues=["default"], limit=1, database="default", start=True
    )
    outcome = claims.complete_and_claim(first, 6, NextClaim(queues=["default"]))
    assert outcome.completed
    assert outcome.next_task is not None
    assert claims.complete(outcome.next_task, 20)


def test_the_hot_statements_are_prepared_once_per_connection() -> None:
    run_one_task_through_the_hot_path()
    first = prepared_statements()
    run_one_task_through_the_hot_path()
    second = prepared_statements()

    # The send, the claim, the completion that claims, the completion.
    assert len(first) == 4, first
    assert second.keys() == first.keys()
    [sends] = [key for key in first if key.lstrip().startswith("WITH inserted")]
    assert (first[sends], second[sends]) == (2, 4)
    assert all(second[key] > first[key] for key in first)
    assert Task.objects.filter(status=TaskStatus.COMPLETED).count() == 4


def test_the_server_plans_the_hot_statements_once_not_every_run() -> None:
    # PostgreSQL plans a prepared statement's first five runs for their
    # values, then keeps one plan if it costs no more than those did.
    for _ in range(8):
        run_one_task_through_the_hot_path()

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans FROM pg_prepared_statements")
        generic_plans = dict(cursor.fetchall())

    assert len(generic_plans) == 4
    planned_every_run = [sql for sql, runs in generic_plans.items() if runs == 0]
    assert planned_every_run == []


def test_django_queries_on_the_same_connection_stay_unprepared() -> None:
    run_one_task_through_the_hot_path()
    ours = prepared_statements().keys()
    for _ in range(10):
        Task.objects.filter(status=TaskStatus.COMPLETED).count()

    assert connection.connection.prepare_threshold is None
    assert prepared_statements().keys() == ours


def test_the_statements_pass_through_django_cursor_wrappers() -> None:
    seen: list[str] = []

    def record(execute: Any, sql: str, *args: Any) -> Any:
        seen.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(record):
        run_one_task_through_the_hot_path()

    # Two sends, the claim, the completion that claims, the completion.
    assert len(seen) == 5
    assert "FOR UPDATE SKIP LOCKED" in seen[2]
    assert len(prepared_statements()) == 4


def test_statements_logged_with_their_parameters_are_not_prepared() -> None:
    with CaptureQueriesContext(connection) as queries:
        run_one_task_through_the_hot_path()

    assert len(queries) == 5
    assert all("%(" not in query["sql"] for query in queries.captured_queries)
    assert prepared_statements() == {}


@override_settings(TASKS_Q={"PREPARED_STATEMENTS": False})
def test_the_setting_turns_preparation_off() -> None:
    run_one_task_through_the_hot_path()

    assert not prepared.uses_prepared_statements("default")
    assert prepared_statements() == {}


def test_a_database_declared_as_pooled_is_not_prepared_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)

    run_one_task_through_the_hot_path()

    assert prepared_statements() == {}


def forget_prepared_statements_behind_psycopgs_back() -> None:
    """What a pooler does when it moves the session to another server
    connection: the statements psycopg prepared are gone."""
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    assert prepared_statements() == {}


def test_a_lost_statement_runs_again_unprepared_and_preparation_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    multiply.send(1, 1)
    forget_prepared_statements_behind_psycopgs_back()

    with caplog.at_level(logging.WARNING, logger="django_tasks_q.prepared"):
        multiply.send(2, 2)
    multiply.send(3, 3)

    assert Task.objects.count() == 3
    assert not prepared.uses_prepared_statements("default")
    assert prepared_statements() == {}
    [record] = caplog.records
    assert record.__dict__["action"] == "prepared_statements_off"
    assert "PREPARED_STATEMENTS" in record.getMessage()


def test_a_lost_statement_inside_a_transaction_fails_the_send_loudly() -> None:
    multiply.send(1, 1)
    forget_prepared_statements_behind_psycopgs_back()

    with pytest.raises(TaskSendError), transaction.atomic():
        multiply.send(2, 2)

    # The error spoiled the transaction, so nothing of it was kept; the next
    # send, unprepared, works.
    assert Task.objects.count() == 1
    multiply.send(3, 3)
    assert Task.objects.count() == 2
