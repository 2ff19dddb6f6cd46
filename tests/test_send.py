"""Sending tasks, the errors a send raises, and the caller's ``TaskHandle``."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import (
    DatabaseError,
    DataError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models.functions import Now
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_tasks_q import (
    ErrorCode,
    TaskError,
    TaskHandle,
    TaskResult,
    TaskSendError,
    TaskStatus,
    task,
)
from django_tasks_q.ids import uuid7
from django_tasks_q.models import Task as TaskRow
from django_tasks_q.registry import TaskRegistry, registry
from django_tasks_q.serialization import encode
from tests.taskapp.payloads import Point, Reading
from tests.taskapp.tasks.api import (
    add,
    add_async,
    collect,
    echo,
    greet,
    make_points,
    send_email,
)

RUN_AT = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@dataclasses.dataclass
class ScriptPoint:
    """Stands in for a class defined in a script run as ``python script.py``."""

    x: int


ScriptPoint.__module__ = "__main__"


def stored(handle: TaskHandle[Any]) -> TaskRow:
    return TaskRow.objects.get(pk=handle.task_id)


def seconds_after_enqueue(row: TaskRow, value: dt.datetime | None) -> float:
    assert value is not None
    return (value - row.enqueued_at).total_seconds()


def finish(handle: TaskHandle[Any], status: TaskStatus, **fields: Any) -> None:
    """Write a final state straight into the row, as a worker would."""
    updated = TaskRow.objects.filter(pk=handle.task_id).update(
        status=status, finished_at=Now(), **fields
    )
    assert updated == 1


def complete(handle: TaskHandle[Any], value: Any) -> None:
    finish(handle, TaskStatus.COMPLETED, result=encode(value, "result"))


def error_code(result: TaskResult[Any, TaskError]) -> str:
    assert result.err is not None, f"expected an error result, got {result!r}"
    return result.err.error_code


@pytest.fixture
def isolated_registry() -> Iterator[TaskRegistry]:
    """Forget the tasks a test declares, since checks read the registry."""
    saved = dict(registry._tasks)

    yield registry

    registry._tasks.clear()
    registry._tasks.update(saved)


@contextlib.contextmanager
def task_table_locked_elsewhere() -> Iterator[None]:
    """Hold a write lock on the task table from a second connection.

    Django's own connection is told to give up after 100 ms, so a send fails
    quickly with the database's real "locked" error.
    """
    settings_dict = connection.settings_dict
    table = TaskRow._meta.db_table

    if connection.vendor == "sqlite":
        other: Any = sqlite3.connect(settings_dict["NAME"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        set_timeout = "PRAGMA busy_timeout = 100"
    else:
        import psycopg

        other = psycopg.connect(
            dbname=settings_dict["NAME"],
            user=settings_dict["USER"],
            password=settings_dict["PASSWORD"],
            host=settings_dict["HOST"],
            port=settings_dict["PORT"] or None,
        )
        other.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        set_timeout = "SET lock_timeout = '100ms'"

    with connection.cursor() as cursor:
        cursor.execute(set_timeout)
    try:
        yield
    finally:
        other.rollback()
        other.close()
        # Drops the shortened timeout along with the connection.
        connection.close()


@contextlib.contextmanager
def task_table_missing() -> Iterator[None]:
    """Rename the task table away for the block, then put it back."""
    table = TaskRow._meta.db_table
    with connection.schema_editor() as editor:
        editor.alter_db_table(TaskRow, table, f"{table}_away")
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            editor.alter_db_table(TaskRow, f"{table}_away", table)


def skip_unless_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("Only PostgreSQL enforces this on insert.")


# --- What a send stores -----------------------------------------------------


@pytest.mark.django_db
def test_send_stores_one_pending_row() -> None:
    handle = add.send(2, b=3)

    row = stored(handle)
    assert TaskRow.objects.count() == 1
    assert row.name == "tests.taskapp.tasks.api.add"
    assert (row.queue, row.priority, row.status) == ("default", 0, "PENDING")
    assert (row.args, row.kwargs) == ([2], {"b": 3})
    assert (row.attempts, row.max_attempts) == (0, 1)
    assert (row.good_until, row.timeout, row.result) == (None, None, None)
    assert handle.task_id == str(row.id)
    assert handle.task_name == add.name


@pytest.mark.django_db
def test_send_without_delay_is_claimable_from_enqueue() -> None:
    handle = add.send(1, 2)

    row = stored(handle)
    assert abs(seconds_after_enqueue(row, row.run_after)) < 1


@pytest.mark.django_db
def test_send_stores_the_task_options() -> None:
    handle = send_email.send("ada@example.com")

    row = stored(handle)
    assert (row.queue, row.priority) == ("emails", 10)
    assert row.max_attempts == 5
    assert row.timeout == 30


@pytest.mark.django_db
def test_send_stores_tagged_arguments() -> None:
    handle = collect.send(Point(x=1, y=2), dy=dt.timedelta(seconds=3))

    row = stored(handle)
    assert row.args == [
        {
            "__tq__": "pydantic",
            "type": "tests.taskapp.payloads:Point",
            "value": {"x": 1, "y": 2},
        }
    ]
    assert row.kwargs == {"dy": {"__tq__": "timedelta", "value": 3.0}}


@pytest.mark.django_db
def test_send_gives_each_run_a_uuid7() -> None:
    handles = [add.send(i, i) for i in range(5)]

    ids = [uuid.UUID(handle.task_id) for handle in handles]
    assert len(set(ids)) == 5
    assert all(task_id.version == 7 for task_id in ids)


@pytest.mark.django_db
def test_send_many_rows_are_claimed_in_the_order_sent() -> None:
    # One INSERT gives every row the same run_after, so the id alone keeps
    # the calls in order (ids.py: "Ids sent later sort later").
    handles = add.send_many([((i, i), {}) for i in range(50)])

    claim_order = list(
        TaskRow.objects.ready(["default"]).values_list("args", flat=True)
    )

    assert claim_order == [[i, i] for i in range(50)]
    assert [uuid.UUID(h.task_id) for h in handles] == sorted(
        uuid.UUID(h.task_id) for h in handles
    )


@pytest.mark.django_db
def test_send_async_stores_a_row() -> None:
    handle = async_to_sync(add_async.send_async)(4, 5)

    row = stored(handle)
    assert row.name == "tests.taskapp.tasks.api.add_async"
    assert row.args == [4, 5]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "delay",
    [
        pytest.param(60, id="int"),
        pytest.param(60.0, id="float"),
        pytest.param(dt.timedelta(minutes=1), id="timedelta"),
    ],
)
def test_schedule_runs_after_delay_on_the_database_clock(
    delay: float | dt.timedelta,
) -> None:
    handle = add.schedule(delay, 1, 2)

    row = stored(handle)
    assert seconds_after_enqueue(row, row.run_after) == pytest.approx(60, abs=0.5)
    assert row.args == [1, 2]


@pytest.mark.django_db
def test_schedule_async_runs_after_delay() -> None:
    handle = async_to_sync(add.schedule_async)(90, 1, 2)

    row = stored(handle)
    assert seconds_after_enqueue(row, row.run_after) == pytest.approx(90, abs=0.5)


@pytest.mark.django_db
def test_using_replaces_queue_and_priority_for_its_sends_only() -> None:
    sender = send_email.using(queue="bulk", priority=-5)

    handle = sender.send("ada@example.com")
    default_handle = send_email.send("bob@example.com")

    assert (stored(handle).queue, stored(handle).priority) == ("bulk", -5)
    assert (stored(default_handle).queue, stored(default_handle).priority) == (
        "emails",
        10,
    )


@pytest.mark.django_db
def test_using_priority_alone_keeps_the_task_queue() -> None:
    handle = send_email.using(priority=99).send("ada@example.com")

    row = stored(handle)
    assert (row.queue, row.priority) == ("emails", 99)


@pytest.mark.django_db
def test_using_run_at_stores_that_time() -> None:
    handle = add.using(run_at=RUN_AT).send(1, 2)

    row = stored(handle)
    assert row.run_after == RUN_AT


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("delay", "seconds"),
    [
        pytest.param(dt.timedelta(minutes=5), 300, id="timedelta"),
        pytest.param(1.5, 1.5, id="float"),
        pytest.param(0, 0, id="zero"),
    ],
)
def test_using_delay_sets_run_after(
    delay: float | dt.timedelta, seconds: float
) -> None:
    handle = add.using(delay=delay).send(1, 2)

    row = stored(handle)
    assert seconds_after_enqueue(row, row.run_after) == pytest.approx(seconds, abs=0.5)


@pytest.mark.django_db
def test_using_good_until_datetime_is_stored() -> None:
    handle = add.using(good_until=RUN_AT).send(1, 2)

    row = stored(handle)
    assert row.good_until == RUN_AT


@pytest.mark.django_db
def test_using_good_until_timedelta_counts_from_enqueue() -> None:
    handle = add.using(good_until=dt.timedelta(hours=1)).send(1, 2)

    row = stored(handle)
    assert seconds_after_enqueue(row, row.good_until) == pytest.approx(3600, abs=0.5)


@pytest.mark.django_db
def test_sender_schedule_keeps_the_sender_options() -> None:
    sender = send_email.using(
        queue="bulk", priority=3, good_until=dt.timedelta(hours=2)
    )

    handle = sender.schedule(30, "ada@example.com")

    row = stored(handle)
    assert (row.queue, row.priority) == ("bulk", 3)
    assert seconds_after_enqueue(row, row.run_after) == pytest.approx(30, abs=0.5)
    assert seconds_after_enqueue(row, row.good_until) == pytest.approx(7200, abs=0.5)


@pytest.mark.django_db
def test_sender_send_async_and_schedule_async_keep_the_options() -> None:
    sender = send_email.using(queue="bulk")

    sent = async_to_sync(sender.send_async)("ada@example.com")
    scheduled = async_to_sync(sender.schedule_async)(45, "bob@example.com")

    assert stored(sent).queue == "bulk"
    assert stored(scheduled).queue == "bulk"
    row = stored(scheduled)
    assert seconds_after_enqueue(row, row.run_after) == pytest.approx(45, abs=0.5)


# --- send_many --------------------------------------------------------------


@pytest.mark.django_db
def test_send_many_stores_one_row_per_call() -> None:
    calls: list[tuple[Any, dict[str, Any]]] = [
        ((1, 2), {}),
        ((3,), {"b": 4}),
        ([5, 6], {}),
    ]

    handles = add.send_many(calls)

    assert len(handles) == 3
    assert len({handle.task_id for handle in handles}) == 3
    assert [stored(handle).args for handle in handles] == [[1, 2], [3], [5, 6]]
    assert [stored(handle).kwargs for handle in handles] == [{}, {"b": 4}, {}]
    assert TaskRow.objects.count() == 3


@pytest.mark.django_db
def test_send_many_uses_one_insert_statement() -> None:
    calls: list[tuple[Any, dict[str, Any]]] = [((i, i), {}) for i in range(20)]

    with CaptureQueriesContext(connection) as queries:
        add.send_many(calls)

    inserts = [q for q in queries.captured_queries if "INSERT INTO" in q["sql"]]
    assert len(inserts) == 1
    assert TaskRow.objects.count() == 20
    if connection.vendor == "postgresql":
        # The insert and the workers' notification are one statement.
        assert len(queries.captured_queries) == 1
        assert "pg_notify" in inserts[0]["sql"]


@pytest.mark.django_db
def test_send_many_with_sender_options() -> None:
    handles = send_email.using(queue="bulk", delay=10).send_many(
        [(("a@example.com",), {}), (("b@example.com",), {})]
    )

    rows = [stored(handle) for handle in handles]
    assert [row.queue for row in rows] == ["bulk", "bulk"]
    assert all(
        seconds_after_enqueue(row, row.run_after) == pytest.approx(10, abs=0.5)
        for row in rows
    )


@pytest.mark.django_db
def test_send_many_async_stores_every_call() -> None:
    handles = async_to_sync(add.send_many_async)([((1, 2), {}), ((3, 4), {})])

    assert [stored(handle).args for handle in handles] == [[1, 2], [3, 4]]


@pytest.mark.django_db
def test_send_many_of_no_calls_stores_nothing() -> None:
    handles = add.send_many([])

    assert handles == []
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_call", "expected"),
    [
        pytest.param(((1,), {}), "missing a required argument: 'b'", id="binding"),
        pytest.param(((1, object()), {}), "argument 'b'", id="unserializable"),
        pytest.param(((1, float("inf")), {}), "not a finite number", id="non-finite"),
    ],
)
def test_send_many_stores_nothing_when_one_call_is_invalid(
    bad_call: tuple[Any, dict[str, Any]], expected: str
) -> None:
    calls = [((1, 2), {}), ((3, 4), {}), bad_call, ((5, 6), {})]

    with pytest.raises(TaskSendError) as raised:
        add.send_many(calls)

    assert raised.value.code == ErrorCode.VALIDATION_FAILED
    assert expected in raised.value.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_send_many_rolls_back_earlier_batches_when_a_later_one_fails() -> None:
    skip_unless_postgresql()
    # 501 calls make two INSERT batches; PostgreSQL's jsonb cannot hold NUL,
    # so the second batch fails after the first was written.
    calls: list[tuple[Any, dict[str, Any]]] = [(("ok",), {}) for _ in range(500)]
    calls.append((("nul \x00 inside",), {}))

    with pytest.raises(TaskSendError) as raised:
        echo.send_many(calls)

    assert raised.value.code == ErrorCode.ENQUEUE_FAILED
    assert raised.value.retryable is False
    assert isinstance(raised.value.__cause__, DataError)
    assert TaskRow.objects.count() == 0


# --- VALIDATION_FAILED --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("send", "task_name", "expected", "parameter"),
    [
        pytest.param(
            lambda: add.send(1),  # type: ignore[call-arg]
            add.name,
            "missing a required argument: 'b'",
            None,
            id="missing-argument",
        ),
        pytest.param(
            lambda: add.send(1, 2, c=3),  # type: ignore[call-arg]
            add.name,
            "unexpected keyword argument 'c'",
            None,
            id="unknown-keyword",
        ),
        pytest.param(
            lambda: add.send(1, 2, 3),  # type: ignore[call-arg]
            add.name,
            "too many positional arguments",
            None,
            id="too-many-arguments",
        ),
        pytest.param(
            lambda: greet.send("Ada", "Hi"),  # type: ignore[call-arg]
            greet.name,
            "too many positional arguments",
            None,
            id="keyword-only-given-positionally",
        ),
        pytest.param(
            lambda: echo.send(object()),
            echo.name,
            "argument 'value': builtins.object is not JSON-serializable",
            "value",
            id="unserializable-positional",
        ),
        pytest.param(
            lambda: greet.send("Ada", greeting={"x": {1, 2}}),  # type: ignore[arg-type]
            greet.name,
            "argument \"greeting['x']\": builtins.set is not JSON-serializable",
            "greeting",
            id="unserializable-nested-keyword",
        ),
        pytest.param(
            lambda: collect.send(1, {2: "two"}),
            collect.name,
            "argument 'items[1]': dict key 2 is not a string",
            "items",
            id="non-string-key-in-varargs",
        ),
        pytest.param(
            lambda: echo.send([1.0, float("nan")]),
            echo.name,
            "argument 'value[1]': nan is not a finite number",
            "value",
            id="non-finite-float",
        ),
        pytest.param(
            lambda: echo.send(ScriptPoint(x=1)),
            echo.name,
            "ScriptPoint is defined in __main__",
            "value",
            id="class-in-main",
        ),
        pytest.param(
            lambda: add.using(queue="has space").send(1, 2),
            add.name,
            "queue 'has space'",
            None,
            id="bad-queue",
        ),
        pytest.param(
            lambda: add.using(queue="").send(1, 2),
            add.name,
            "queue ''",
            None,
            id="empty-queue",
        ),
        pytest.param(
            lambda: add.using(priority="high").send(1, 2),  # type: ignore[arg-type]
            add.name,
            "priority must be an integer between -2147483648 and 2147483647, "
            "not 'high'",
            None,
            id="bad-priority",
        ),
        pytest.param(
            lambda: add.using(run_at=RUN_AT, delay=5).send(1, 2),
            add.name,
            "give run_at or delay, not both",
            None,
            id="run-at-and-delay",
        ),
        pytest.param(
            lambda: add.using(run_at=dt.datetime(2030, 1, 1)).send(1, 2),
            add.name,
            "run_at must be an aware datetime, not datetime.datetime(2030, 1, 1, 0, 0)",
            None,
            id="naive-run-at",
        ),
        pytest.param(
            lambda: add.using(delay=-1).send(1, 2),
            add.name,
            "delay must be a number of seconds >= 0, not -1",
            None,
            id="negative-delay",
        ),
        pytest.param(
            lambda: add.schedule(dt.timedelta(seconds=-30), 1, 2),
            add.name,
            "not datetime.timedelta(days=-1, seconds=86370)",
            None,
            id="negative-timedelta-delay",
        ),
        pytest.param(
            lambda: add.schedule("soon", 1, 2),  # type: ignore[arg-type]
            add.name,
            "not 'soon'",
            None,
            id="delay-not-a-number",
        ),
        pytest.param(
            lambda: add.using(good_until=dt.datetime(2030, 1, 1)).send(1, 2),
            add.name,
            "good_until must be an aware datetime or a timedelta",
            None,
            id="naive-good-until",
        ),
    ],
)
def test_invalid_send_raises_validation_failed_naming_task_and_value(
    send: Callable[[], object], task_name: str, expected: str, parameter: str | None
) -> None:
    with pytest.raises(TaskSendError) as raised:
        send()

    error = raised.value
    assert error.code == ErrorCode.VALIDATION_FAILED
    assert error.task_name == task_name
    assert f"Task {task_name!r}" in error.message
    assert expected in error.message
    assert error.parameter == parameter
    assert error.retryable is False
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
def test_send_of_a_class_defined_inside_a_function_fails_validation() -> None:
    @dataclasses.dataclass
    class LocalPoint:
        x: int

    with pytest.raises(TaskSendError) as raised:
        echo.send(LocalPoint(x=1))

    assert raised.value.code == ErrorCode.VALIDATION_FAILED
    assert "LocalPoint is defined inside a function" in raised.value.message
    assert raised.value.parameter == "value"
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
def test_send_of_a_model_holding_nan_fails_validation() -> None:
    with pytest.raises(TaskSendError) as raised:
        echo.send(Reading(sensor="t1", value=float("nan")))

    assert raised.value.code == ErrorCode.VALIDATION_FAILED
    assert "not a finite number" in raised.value.message
    assert raised.value.parameter == "value"
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
def test_async_send_raises_the_same_validation_error() -> None:
    with pytest.raises(TaskSendError) as raised:
        async_to_sync(add_async.send_async)(1)  # type: ignore[call-arg]

    assert raised.value.code == ErrorCode.VALIDATION_FAILED
    assert "missing a required argument: 'b'" in raised.value.message
    assert TaskRow.objects.count() == 0


# --- PAYLOAD_TOO_LARGE --------------------------------------------------------


@pytest.mark.django_db
@override_settings(TASKS_Q={"MAX_PAYLOAD_BYTES": 100})
def test_payload_at_the_limit_is_sent() -> None:
    # [["aaa…"],{}] is the value plus 9 bytes of JSON around it.
    handle = echo.send("a" * 91)

    assert stored(handle).args == ["a" * 91]


@pytest.mark.django_db
@override_settings(TASKS_Q={"MAX_PAYLOAD_BYTES": 100})
def test_payload_over_the_limit_names_the_positional_parameter() -> None:
    with pytest.raises(TaskSendError) as raised:
        echo.send("a" * 92)

    error = raised.value
    assert error.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert f"Task {echo.name!r}" in error.message
    assert "101 bytes, over the 100-byte MAX_PAYLOAD_BYTES limit" in error.message
    assert error.parameter == "value"
    assert "'value'" in error.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
@override_settings(TASKS_Q={"MAX_PAYLOAD_BYTES": 100})
def test_payload_over_the_limit_names_the_largest_keyword() -> None:
    with pytest.raises(TaskSendError) as raised:
        greet.send("Ada", greeting="x" * 200)

    error = raised.value
    assert error.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert error.parameter == "greeting"
    assert "the largest is 'greeting' (202 bytes)" in error.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
@override_settings(TASKS_Q={"MAX_PAYLOAD_BYTES": 100})
def test_send_many_stores_nothing_when_one_payload_is_too_large() -> None:
    with pytest.raises(TaskSendError) as raised:
        echo.send_many([(("small",), {}), (("x" * 500,), {})])

    assert raised.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert TaskRow.objects.count() == 0


# --- SEND_SUPPRESSED ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda: add.send(1, 2), id="send"),
        pytest.param(lambda: add.schedule(5, 1, 2), id="schedule"),
        pytest.param(lambda: add.send_many([((1, 2), {})]), id="send-many"),
        pytest.param(lambda: add.using(queue="bulk").send(1, 2), id="using"),
        pytest.param(lambda: async_to_sync(add.send_async)(1, 2), id="send-async"),
    ],
)
def test_send_while_sends_are_suppressed_raises_send_suppressed(
    send: Callable[[], object],
) -> None:
    with registry.suppress_sends(), pytest.raises(TaskSendError) as raised:
        send()

    assert raised.value.code == ErrorCode.SEND_SUPPRESSED
    assert raised.value.task_name == add.name
    assert f"Task {add.name!r} was sent while task modules" in raised.value.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
def test_suppression_is_checked_before_validation() -> None:
    with registry.suppress_sends(), pytest.raises(TaskSendError) as raised:
        add.send(1)  # type: ignore[call-arg]

    assert raised.value.code == ErrorCode.SEND_SUPPRESSED


@pytest.mark.django_db
def test_sends_work_again_after_nested_suppression_ends() -> None:
    with registry.suppress_sends():
        with registry.suppress_sends():
            pass
        still_suppressed = registry.sends_suppressed

    handle = add.send(1, 2)

    assert still_suppressed is True
    assert registry.sends_suppressed is False
    assert stored(handle).args == [1, 2]


# --- ENQUEUE_FAILED -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_send_to_a_locked_table_fails_retryably() -> None:
    with task_table_locked_elsewhere(), pytest.raises(TaskSendError) as raised:
        add.send(1, 2)

    error = raised.value
    assert error.code == ErrorCode.ENQUEUE_FAILED
    assert error.retryable is True
    assert isinstance(error.__cause__, OperationalError)
    assert f"Task {add.name!r} could not be stored" in error.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_send_many_to_a_locked_table_fails_retryably() -> None:
    with task_table_locked_elsewhere(), pytest.raises(TaskSendError) as raised:
        add.send_many([((1, 2), {}), ((3, 4), {})])

    assert raised.value.code == ErrorCode.ENQUEUE_FAILED
    assert raised.value.retryable is True
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_send_without_the_task_table_fails_to_enqueue() -> None:
    with task_table_missing(), pytest.raises(TaskSendError) as raised:
        greet.send("Ada")

    error = raised.value
    assert error.code == ErrorCode.ENQUEUE_FAILED
    assert error.task_name == greet.name
    assert isinstance(error.__cause__, DatabaseError)
    assert f"Task {greet.name!r} could not be stored" in error.message
    assert TaskRow._meta.db_table in error.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_name_longer_than_the_column_fails_to_enqueue_for_good(
    isolated_registry: TaskRegistry,
) -> None:
    skip_unless_postgresql()
    long_name = "tests.long." + "n" * 300

    @task(name=long_name)
    def long_named() -> None:
        pass

    with pytest.raises(TaskSendError) as raised:
        long_named.send()

    error = raised.value
    assert error.code == ErrorCode.ENQUEUE_FAILED
    assert error.retryable is False
    assert isinstance(error.__cause__, DataError)
    assert repr(long_name) in error.message
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_priority_beyond_the_column_raises_task_send_error() -> None:
    with pytest.raises(TaskSendError):
        add.using(priority=2**63).send(1, 2)

    assert TaskRow.objects.count() == 0


# --- Transactions -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_send_in_a_rolled_back_transaction_leaves_no_row() -> None:
    with transaction.atomic():
        handle = add.send(1, 2)
        visible_inside = TaskRow.objects.filter(pk=handle.task_id).exists()
        transaction.set_rollback(True)

    assert visible_inside is True
    assert TaskRow.objects.count() == 0
    assert error_code(handle.get(timeout_ms=0)) == ErrorCode.TASK_NOT_FOUND


@pytest.mark.django_db(transaction=True)
def test_send_many_in_a_rolled_back_transaction_leaves_no_row() -> None:
    with transaction.atomic():
        add.send_many([((1, 2), {}), ((3, 4), {})])
        transaction.set_rollback(True)

    assert TaskRow.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_get_inside_the_sending_transaction_returns_not_committed_at_once() -> None:
    with transaction.atomic():
        handle = add.send(1, 2)
        started = time.monotonic()
        result = handle.get(timeout_ms=10_000)
        elapsed = time.monotonic() - started

    assert error_code(result) == ErrorCode.TASK_NOT_COMMITTED
    assert handle.task_id in result.err.message  # type: ignore[union-attr]
    assert elapsed < 5


@pytest.mark.django_db(transaction=True)
def test_get_async_inside_the_sending_transaction_returns_not_committed() -> None:
    with transaction.atomic():
        handle = add.send(1, 2)
        started = time.monotonic()
        result = async_to_sync(handle.get_async)(timeout_ms=1_000)
        elapsed = time.monotonic() - started

    assert error_code(result) == ErrorCode.TASK_NOT_COMMITTED
    assert elapsed < 0.5


@pytest.mark.django_db(transaction=True)
def test_get_after_the_sending_transaction_commits_waits_normally() -> None:
    with transaction.atomic():
        handle = add.send(1, 2)
        inside = handle.get(timeout_ms=0)

    with transaction.atomic():
        later = handle.get(timeout_ms=0)

    assert error_code(inside) == ErrorCode.TASK_NOT_COMMITTED
    assert error_code(later) == ErrorCode.WAIT_TIMEOUT
    assert stored(handle).status == TaskStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_every_handle_of_send_many_in_a_transaction_is_not_committed() -> None:
    with transaction.atomic():
        handles = add.send_many([((1, 2), {}), ((3, 4), {})])
        results = [handle.get(timeout_ms=0) for handle in handles]

    after = [handle.get(timeout_ms=0) for handle in handles]

    assert [error_code(r) for r in results] == [ErrorCode.TASK_NOT_COMMITTED] * 2
    assert [error_code(r) for r in after] == [ErrorCode.WAIT_TIMEOUT] * 2


# --- TaskHandle.get() ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_get_with_zero_timeout_on_a_pending_task_is_not_cached() -> None:
    handle = add.send(2, 3)

    waited = handle.get(timeout_ms=0)
    complete(handle, 5)
    finished = handle.get(timeout_ms=0)

    assert error_code(waited) == ErrorCode.WAIT_TIMEOUT
    assert waited.err.message == (  # type: ignore[union-attr]
        f"Task {handle.task_id} did not finish within 0 ms."
    )
    assert finished == TaskResult(ok=5)


@pytest.mark.django_db(transaction=True)
def test_get_waits_about_its_timeout_for_a_pending_task() -> None:
    handle = add.send(2, 3)

    started = time.monotonic()
    result = handle.get(timeout_ms=300)
    elapsed = time.monotonic() - started

    assert error_code(result) == ErrorCode.WAIT_TIMEOUT
    assert 0.29 <= elapsed < 5


@pytest.mark.django_db(transaction=True)
def test_get_caches_a_final_result() -> None:
    handle = add.send(2, 3)
    complete(handle, 5)

    first = handle.get(timeout_ms=0)
    TaskRow.objects.filter(pk=handle.task_id).update(result=6)
    second = handle.get(timeout_ms=0)
    fresh = TaskHandle[int](handle.task_id).get(timeout_ms=0)

    assert first == second == TaskResult(ok=5)
    assert fresh == TaskResult(ok=6)


@pytest.mark.django_db(transaction=True)
def test_get_of_an_unknown_id_returns_task_not_found_at_once() -> None:
    task_id = str(uuid7())
    handle: TaskHandle[int] = TaskHandle(task_id)

    started = time.monotonic()
    result = handle.get(timeout_ms=10_000)
    elapsed = time.monotonic() - started

    assert error_code(result) == ErrorCode.TASK_NOT_FOUND
    assert result.err.message == (  # type: ignore[union-attr]
        f"No task with id {task_id!r} exists."
    )
    assert elapsed < 5


@pytest.mark.django_db(transaction=True)
def test_get_rehydrates_the_result_by_return_annotation() -> None:
    handle = make_points.send(2)
    TaskRow.objects.filter(pk=handle.task_id).update(
        status=TaskStatus.COMPLETED, result=[{"x": 0, "y": 0}, {"x": 1, "y": -1}]
    )

    result = handle.get(timeout_ms=0)

    assert result.ok == [Point(x=0, y=0), Point(x=1, y=-1)]
    assert all(type(point) is Point for point in result.unwrap())


@pytest.mark.django_db(transaction=True)
def test_get_of_a_result_that_does_not_fit_returns_result_invalid() -> None:
    handle = make_points.send(1)
    TaskRow.objects.filter(pk=handle.task_id).update(
        status=TaskStatus.COMPLETED, result=[{"x": "far"}]
    )

    result = handle.get(timeout_ms=0)

    assert error_code(result) == ErrorCode.RESULT_INVALID
    assert repr(make_points.name) in result.err.message  # type: ignore[union-attr]


@pytest.mark.django_db(transaction=True)
def test_get_of_a_failed_task_returns_its_stored_error() -> None:
    handle = add.send(1, 0)
    finish(
        handle,
        TaskStatus.FAILED,
        error_code="UNHANDLED_EXCEPTION",
        error_message="division by zero",
        error_data={"attempt": 1},
        exception_type="builtins.ZeroDivisionError",
        traceback="Traceback (most recent call last): ...",
    )

    result = handle.get(timeout_ms=0)

    assert result.err == TaskError(
        error_code="UNHANDLED_EXCEPTION",
        message="division by zero",
        data={"attempt": 1},
        exception_type="builtins.ZeroDivisionError",
        traceback="Traceback (most recent call last): ...",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(TaskStatus.CANCELLED, ErrorCode.TASK_CANCELLED, id="cancelled"),
        pytest.param(TaskStatus.EXPIRED, ErrorCode.TASK_EXPIRED, id="expired"),
    ],
)
def test_get_of_a_cancelled_or_expired_task_without_code(
    status: TaskStatus, code: ErrorCode
) -> None:
    handle = add.send(1, 2)
    finish(handle, status)

    result = handle.get(timeout_ms=0)

    assert error_code(result) == code
    assert result.err.exception_type is None  # type: ignore[union-attr]


@pytest.mark.django_db(transaction=True)
def test_get_async_follows_the_same_rules_as_get() -> None:
    pending = add.send(1, 2)
    unknown: TaskHandle[int] = TaskHandle(str(uuid7()))

    waited = async_to_sync(pending.get_async)(timeout_ms=0)
    missing = async_to_sync(unknown.get_async)(timeout_ms=0)
    complete(pending, 3)
    finished = async_to_sync(pending.get_async)(timeout_ms=0)

    assert error_code(waited) == ErrorCode.WAIT_TIMEOUT
    assert error_code(missing) == ErrorCode.TASK_NOT_FOUND
    assert finished == TaskResult(ok=3)


# --- TaskHandle.info() --------------------------------------------------------


@pytest.mark.django_db
def test_info_of_a_pending_task() -> None:
    handle = send_email.using(good_until=RUN_AT).send("ada@example.com")
    row = stored(handle)

    info = handle.info()

    assert info is not None
    assert info.task_id == handle.task_id
    assert info.task_name == send_email.name
    assert (info.queue, info.priority, info.status) == ("emails", 10, "PENDING")
    assert (info.attempts, info.max_attempts) == (0, 5)
    assert info.enqueued_at == row.enqueued_at
    assert info.run_after == row.run_after
    assert info.good_until == RUN_AT
    assert (info.claimed_at, info.started_at, info.finished_at) == (None,) * 3
    assert (info.worker_id, info.progress) == (None, None)
    assert (info.result, info.failed_reason) == (None, None)


@pytest.mark.django_db
def test_info_includes_the_result_only_when_asked_and_finished() -> None:
    handle = make_points.send(1)
    pending = handle.info(include_result=True)
    TaskRow.objects.filter(pk=handle.task_id).update(
        status=TaskStatus.COMPLETED,
        result=[{"x": 0, "y": 0}],
        worker_id="host-1-abc",
        progress={"done": 1},
    )

    without = handle.info()
    with_result = handle.info(include_result=True)

    assert pending is not None
    assert pending.result is None
    assert without is not None
    assert without.result is None
    assert with_result is not None
    assert with_result.result == TaskResult(ok=[Point(x=0, y=0)])
    assert with_result.status == TaskStatus.COMPLETED
    assert with_result.worker_id == "host-1-abc"
    assert with_result.progress == {"done": 1}


@pytest.mark.django_db
def test_info_includes_the_failed_reason_only_when_asked() -> None:
    handle = add.send(1, 0)
    finish(
        handle,
        TaskStatus.FAILED,
        error_code="RATE_LIMITED",
        error_message="Slow down.",
    )

    without = handle.info(include_result=True)
    with_reason = handle.info(include_failed_reason=True)

    assert without is not None
    assert without.failed_reason is None
    assert without.result == TaskResult(
        err=TaskError(error_code="RATE_LIMITED", message="Slow down.")
    )
    assert with_reason is not None
    assert with_reason.failed_reason == TaskError(
        error_code="RATE_LIMITED", message="Slow down."
    )
    assert with_reason.finished_at is not None


@pytest.mark.django_db
def test_info_of_an_unknown_id_is_none() -> None:
    handle: TaskHandle[int] = TaskHandle(str(uuid7()))

    info = handle.info(include_result=True, include_failed_reason=True)

    assert info is None


@pytest.mark.django_db
def test_info_async_returns_the_same_snapshot() -> None:
    handle = add.send(1, 2)

    info = async_to_sync(handle.info_async)()

    assert info == handle.info()
    assert info is not None
    assert info.task_name == add.name


# --- Rebuilding a handle ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_handle_rebuilt_from_its_id_reads_the_same_task() -> None:
    original = add.send(2, 3)
    complete(original, 5)

    rebuilt: TaskHandle[int] = TaskHandle(original.task_id)
    typed = add.handle(original.task_id)

    assert rebuilt == original == typed
    assert hash(rebuilt) == hash(original)
    assert repr(rebuilt) == f"<TaskHandle {original.task_id}>"
    assert rebuilt.task_name is None
    assert typed.task_name == add.name
    assert rebuilt.get(timeout_ms=0) == TaskResult(ok=5)
    assert typed.get(timeout_ms=0) == TaskResult(ok=5)


@pytest.mark.django_db(transaction=True)
def test_rebuilt_handle_rehydrates_by_the_stored_task_name() -> None:
    original = make_points.send(1)
    complete(original, [Point(x=7, y=8)])
    task_id = uuid.UUID(original.task_id)

    rebuilt: TaskHandle[list[Point]] = TaskHandle(task_id)

    assert rebuilt.task_id == original.task_id
    assert rebuilt.get(timeout_ms=0) == TaskResult(ok=[Point(x=7, y=8)])
    assert make_points.handle(original.task_id).get(timeout_ms=0).ok == [
        Point(x=7, y=8)
    ]


def test_handles_of_different_tasks_differ() -> None:
    first: TaskHandle[int] = TaskHandle(str(uuid7()))
    second: TaskHandle[int] = TaskHandle(str(uuid7()))

    different = first != second

    assert different
    assert first != first.task_id
