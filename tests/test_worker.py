"""``runworker`` as a real subprocess: running tasks, failures, retries, options."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from typing import Any

import pytest
from django.core.management.base import BaseCommand
from django.db.models.functions import Now
from django.utils import timezone

from django_tasks_q import ErrorCode, TaskHandle, TaskStatus
from django_tasks_q.management.commands import runworker
from django_tasks_q.models import Task, TaskAttempt, Worker
from tests.helpers import RunWorker
from tests.taskapp.tasks.worker import (
    Point,
    always_fails_fixed,
    call_partner,
    double_async,
    explode,
    multiply,
    rate_limited,
    shift,
    sleep_for,
    succeeds_on_attempt,
    unserializable,
    whoami,
)

pytestmark = pytest.mark.django_db(transaction=True)

WORKER_TASKS = "tests.taskapp.tasks.worker"


def run_burst(
    run_worker: RunWorker, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a burst worker that polls quickly, and check that it exited 0."""
    process = run_worker("--burst", "--poll-interval", "0.1", *args, timeout=timeout)
    assert process.returncode == 0, process.stderr
    return process


def row_of(handle: TaskHandle[Any]) -> Task:
    return Task.objects.get(pk=handle.task_id)


def attempts_of(handle: TaskHandle[Any]) -> list[TaskAttempt]:
    return list(TaskAttempt.objects.filter(task_id=handle.task_id).order_by("number"))


def insert_row(name: str, args: list[Any], priority: int = 0) -> TaskHandle[Any]:
    """Store a task row by hand, as a foreign or corrupted producer would."""
    row = Task.objects.create(name=name, args=args, kwargs={}, priority=priority)
    return TaskHandle(str(row.pk))


def make_due(handle: TaskHandle[Any]) -> None:
    """Let a task scheduled for later be claimed now, instead of sleeping."""
    Task.objects.filter(pk=handle.task_id).update(run_after=Now())


def retry_delay_of(handle: TaskHandle[Any]) -> dt.timedelta:
    """How long after its last attempt ended a re-queued task becomes due."""
    task_row = row_of(handle)
    last_attempt = attempts_of(handle)[-1]
    assert last_attempt.finished_at is not None
    return task_row.run_after - last_attempt.finished_at


def long_options(command: BaseCommand) -> set[str]:
    parser = command.create_parser("manage.py", "runworker")
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--")
    }


def assert_delay_close(delay: dt.timedelta, seconds: float) -> None:
    # Both values come from the database clock; PostgreSQL stamps them in one
    # transaction, SQLite a few milliseconds apart.
    assert abs(delay.total_seconds() - seconds) < 0.25, delay


# Running tasks


def test_worker_runs_sent_task_and_records_its_attempt(run_worker: RunWorker) -> None:
    handle = multiply.send(6, 7)

    run_burst(run_worker, "--worker-id", "attempt-log-worker")

    result = handle.get(timeout_ms=0)
    assert result.is_ok(), result.err
    assert result.ok == 42
    task_row = row_of(handle)
    assert (task_row.status, task_row.attempts) == (TaskStatus.COMPLETED, 1)
    assert task_row.started_at is not None
    assert task_row.finished_at is not None
    assert task_row.started_at <= task_row.finished_at
    (attempt,) = attempts_of(handle)
    assert (attempt.number, attempt.outcome) == (1, "COMPLETED")
    assert attempt.worker_id == "attempt-log-worker"
    assert attempt.lease_token is not None
    assert attempt.finished_at is not None
    assert attempt.started_at <= attempt.finished_at
    assert (attempt.error_code, attempt.error_message) == ("", "")
    assert (attempt.exception_type, attempt.traceback) == ("", "")


def test_worker_result_is_rehydrated_from_return_annotation(
    run_worker: RunWorker,
) -> None:
    handle = shift.send(Point(x=1, y=2), 10)
    stored_plain = shift.send(Point(x=0, y=0), 1)

    run_burst(run_worker)
    # A plain dict, as a task returning model_dump() would have stored it.
    Task.objects.filter(pk=stored_plain.task_id).update(result={"x": 5, "y": 6})

    result = handle.get(timeout_ms=0)
    assert result.ok == Point(x=11, y=2)
    assert type(result.ok) is Point
    plain_result = stored_plain.get(timeout_ms=0)
    assert plain_result.ok == Point(x=5, y=6)
    assert type(plain_result.ok) is Point


def test_worker_runs_async_task_on_event_loop(run_worker: RunWorker) -> None:
    handles = [double_async.send(value) for value in (1, 2, 3)]

    run_burst(run_worker)

    results = [handle.get(timeout_ms=0) for handle in handles]
    assert [result.ok for result in results] == [
        {"value": value * 2, "thread": "tasks-q-event-loop", "task_id": handle.task_id}
        for value, handle in zip((1, 2, 3), handles, strict=True)
    ]


# Failures: each ends its task with a code, and the worker keeps going


def test_worker_unhandled_exception_fails_task_with_traceback(
    run_worker: RunWorker,
) -> None:
    failing = explode.using(priority=1).send("boom")
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    error = failing.get(timeout_ms=0).err
    assert error is not None
    assert error.error_code == ErrorCode.UNHANDLED_EXCEPTION
    assert error.message == "boom"
    assert error.exception_type == "builtins.ValueError"
    assert error.traceback is not None
    assert "raise ValueError(message)" in error.traceback
    assert error.traceback.rstrip().endswith("ValueError: boom")
    (attempt,) = attempts_of(failing)
    assert attempt.outcome == "FAILED"
    assert attempt.error_code == ErrorCode.UNHANDLED_EXCEPTION
    assert attempt.error_message == "boom"
    assert attempt.exception_type == "builtins.ValueError"
    assert attempt.traceback == error.traceback
    assert row_of(failing).status == TaskStatus.FAILED
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_task_failure_stores_custom_code(run_worker: RunWorker) -> None:
    failing = rate_limited.using(priority=1).send(5)
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    error = failing.get(timeout_ms=0).err
    assert error is not None
    assert error.error_code == "RATE_LIMITED"
    assert error.message == "The partner API asked to slow down."
    assert error.data == {"after": 5}
    assert error.exception_type == "django_tasks_q.exceptions.TaskFailure"
    (attempt,) = attempts_of(failing)
    assert (attempt.outcome, attempt.error_code) == ("FAILED", "RATE_LIMITED")
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_unknown_task_name_fails_not_registered(run_worker: RunWorker) -> None:
    unknown = insert_row(f"{WORKER_TASKS}.no_such_task", [1], priority=1)
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    error = unknown.get(timeout_ms=0).err
    assert error is not None
    assert error.error_code == ErrorCode.TASK_NOT_REGISTERED
    assert "no_such_task" in error.message
    task_row = row_of(unknown)
    assert (task_row.status, task_row.attempts) == (TaskStatus.FAILED, 1)
    (attempt,) = attempts_of(unknown)
    assert attempt.error_code == ErrorCode.TASK_NOT_REGISTERED
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_arguments_that_do_not_bind_fail_payload_invalid(
    run_worker: RunWorker,
) -> None:
    bad = insert_row(multiply.name, [1, 2, 3], priority=1)
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    error = bad.get(timeout_ms=0).err
    assert error is not None
    assert error.error_code == ErrorCode.PAYLOAD_INVALID
    assert "too many positional arguments" in error.message
    (attempt,) = attempts_of(bad)
    assert attempt.error_code == ErrorCode.PAYLOAD_INVALID
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_forged_type_tag_fails_payload_invalid(run_worker: RunWorker) -> None:
    forged = {
        "os:system": "is not a pydantic class",
        "tests_forged_module:Model": "neither imported nor part of an installed app",
    }
    bad = {
        type_path: insert_row(
            shift.name,
            [{"__tq__": "pydantic", "type": type_path, "value": {"x": 1}}, 1],
            priority=1,
        )
        for type_path in forged
    }
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    for type_path, reason in forged.items():
        error = bad[type_path].get(timeout_ms=0).err
        assert error is not None
        assert error.error_code == ErrorCode.PAYLOAD_INVALID
        assert type_path in error.message
        assert reason in error.message
        assert row_of(bad[type_path]).attempts == 1
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_unserializable_result_fails_task(run_worker: RunWorker) -> None:
    failing = unserializable.using(priority=1).send()
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    error = failing.get(timeout_ms=0).err
    assert error is not None
    assert error.error_code == ErrorCode.RESULT_NOT_SERIALIZABLE
    assert error.exception_type == "builtins.object"
    assert "builtins.object is not JSON-serializable" in error.message
    task_row = row_of(failing)
    assert (task_row.status, task_row.result) == (TaskStatus.FAILED, None)
    (attempt,) = attempts_of(failing)
    assert attempt.error_code == ErrorCode.RESULT_NOT_SERIALIZABLE
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_expires_task_past_good_until(run_worker: RunWorker) -> None:
    past = timezone.now() - dt.timedelta(minutes=1)
    expired = multiply.using(priority=1, good_until=past).send(1, 1)
    normal = multiply.send(2, 3)

    run_burst(run_worker, "--concurrency", "1")

    error = expired.get(timeout_ms=0).err
    assert error is not None
    assert error.error_code == ErrorCode.TASK_EXPIRED
    task_row = row_of(expired)
    assert task_row.status == TaskStatus.EXPIRED
    assert task_row.attempts == 0
    assert task_row.started_at is None
    assert task_row.finished_at is not None
    assert attempts_of(expired) == []
    assert normal.get(timeout_ms=0).ok == 6


def test_worker_expires_task_whose_deadline_was_edited(run_worker: RunWorker) -> None:
    expired = multiply.using(good_until=dt.timedelta(hours=1)).send(1, 1)
    Task.objects.filter(pk=expired.task_id).update(good_until=Now())
    in_time = multiply.using(good_until=dt.timedelta(hours=1)).send(4, 5)

    run_burst(run_worker)

    expired_row = row_of(expired)
    assert expired_row.status == TaskStatus.EXPIRED
    assert expired_row.error_code == ErrorCode.TASK_EXPIRED
    assert attempts_of(expired) == []
    assert in_time.get(timeout_ms=0).ok == 20


# Retries


def test_worker_fixed_retry_requeues_then_fails(run_worker: RunWorker) -> None:
    handle = always_fails_fixed.send()

    run_burst(run_worker)

    task_row = row_of(handle)
    assert task_row.status == TaskStatus.PENDING
    assert (task_row.attempts, task_row.max_attempts) == (1, 2)
    assert task_row.error_code == ErrorCode.UNHANDLED_EXCEPTION
    assert task_row.lease_token is None
    assert task_row.finished_at is None
    assert_delay_close(retry_delay_of(handle), 30)

    make_due(handle)
    run_burst(run_worker)

    task_row = row_of(handle)
    assert (task_row.status, task_row.attempts) == (TaskStatus.FAILED, 2)
    assert task_row.finished_at is not None
    attempts = attempts_of(handle)
    assert [attempt.number for attempt in attempts] == [1, 2]
    assert {attempt.outcome for attempt in attempts} == {"FAILED"}
    assert {attempt.error_message for attempt in attempts} == {"still broken"}
    error = handle.get(timeout_ms=0).err
    assert error is not None
    assert (error.error_code, error.message) == ("UNHANDLED_EXCEPTION", "still broken")


def test_worker_retried_task_completes_on_later_attempt(
    run_worker: RunWorker,
) -> None:
    handle = succeeds_on_attempt.send(3)

    run_burst(run_worker)

    assert handle.get(timeout_ms=0).ok == {"attempt": 3, "is_retry": True}
    assert row_of(handle).attempts == 3
    outcomes = [attempt.outcome for attempt in attempts_of(handle)]
    assert outcomes == ["FAILED", "FAILED", "COMPLETED"]


def test_worker_exponential_retry_grows_delay_until_failed(
    run_worker: RunWorker,
) -> None:
    handle = call_partner.send("connection")

    delays = []
    for _ in range(3):
        run_burst(run_worker)
        if row_of(handle).status == TaskStatus.PENDING:
            delays.append(retry_delay_of(handle))
            make_due(handle)

    assert len(delays) == 2
    assert_delay_close(delays[0], 10)
    assert_delay_close(delays[1], 30)
    task_row = row_of(handle)
    assert (task_row.status, task_row.attempts) == (TaskStatus.FAILED, 3)
    assert task_row.exception_type == "builtins.ConnectionRefusedError"
    assert len(attempts_of(handle)) == 3


def test_worker_auto_retry_matches_error_code(run_worker: RunWorker) -> None:
    handle = call_partner.send("rate")

    run_burst(run_worker)

    task_row = row_of(handle)
    assert (task_row.status, task_row.attempts) == (TaskStatus.PENDING, 1)
    assert task_row.error_code == "RATE_LIMITED"
    assert_delay_close(retry_delay_of(handle), 10)


def test_worker_auto_retry_skips_unmatched_exception(run_worker: RunWorker) -> None:
    handle = call_partner.send("value")

    run_burst(run_worker)

    task_row = row_of(handle)
    assert task_row.status == TaskStatus.FAILED
    assert (task_row.attempts, task_row.max_attempts) == (1, 3)
    assert task_row.exception_type == "builtins.ValueError"
    assert len(attempts_of(handle)) == 1


# Claim order and options


def test_worker_claims_by_priority_then_run_after_then_id(
    run_worker: RunWorker,
) -> None:
    now = timezone.now()
    earlier, later = now - dt.timedelta(minutes=2), now - dt.timedelta(minutes=1)
    low = multiply.using(priority=-5).send(1, 1)
    middle_later = multiply.using(priority=5, run_at=later).send(1, 2)
    middle_earlier = multiply.using(priority=5, run_at=earlier).send(1, 3)
    high = multiply.using(priority=10).send(1, 4)
    default_pair = [multiply.using(run_at=later).send(1, n) for n in (5, 6)]

    run_burst(run_worker, "--concurrency", "1")

    started = TaskAttempt.objects.order_by("id").values_list("task_id", "started_at")
    order = [str(task_id) for task_id, _started_at in started]
    ties = sorted(handle.task_id for handle in default_pair)
    by_priority = [high.task_id, middle_earlier.task_id, middle_later.task_id]
    assert order == [*by_priority, *ties, low.task_id]
    start_times = [started_at for _task_id, started_at in started]
    assert start_times == sorted(start_times)


def test_worker_queues_option_restricts_claiming(run_worker: RunWorker) -> None:
    email = multiply.using(queue="emails").send(1, 2)
    report = multiply.using(queue="reports").send(1, 3)
    default = multiply.send(1, 4)

    run_burst(run_worker, "--queues", "emails,reports")

    assert email.get(timeout_ms=0).ok == 2
    assert report.get(timeout_ms=0).ok == 3
    default_row = row_of(default)
    assert (default_row.status, default_row.attempts) == (TaskStatus.PENDING, 0)


def test_worker_max_tasks_exits_after_that_many(run_worker: RunWorker) -> None:
    handles = [multiply.send(1, n) for n in range(5)]

    process = run_worker("--max-tasks", "2", "--concurrency", "4", timeout=20)

    assert process.returncode == 0, process.stderr
    assert "reached --max-tasks=2" in process.stderr
    statuses = [row_of(handle).status for handle in handles]
    assert statuses.count(TaskStatus.COMPLETED) == 2
    assert statuses.count(TaskStatus.PENDING) == 3
    assert Task.objects.filter(attempts__gt=0).count() == 2


def test_worker_burst_leaves_scheduled_task_alone(run_worker: RunWorker) -> None:
    scheduled = multiply.schedule(3600, 1, 2)
    due = multiply.schedule(0, 1, 3)

    process = run_burst(run_worker)

    assert "found nothing to claim; burst mode ends" in process.stderr
    assert due.get(timeout_ms=0).ok == 3
    scheduled_row = row_of(scheduled)
    assert scheduled_row.status == TaskStatus.PENDING
    assert (scheduled_row.attempts, scheduled_row.worker_id) == (0, "")
    assert attempts_of(scheduled) == []


def test_worker_id_is_recorded_on_rows_and_worker(run_worker: RunWorker) -> None:
    handle = whoami.send()

    run_burst(run_worker, "--worker-id", "test-worker-7", "--concurrency", "3")

    result = handle.get(timeout_ms=0).ok
    assert result is not None
    assert (result["worker_id"], result["attempt"]) == ("test-worker-7", 1)
    assert row_of(handle).worker_id == "test-worker-7"
    assert attempts_of(handle)[0].worker_id == "test-worker-7"
    worker = Worker.objects.get(pk="test-worker-7")
    assert worker.pid == result["pid"]
    assert (worker.queues, worker.concurrency) == (["default"], 3)
    assert worker.stopped_at is not None
    assert worker.started_at <= worker.stopped_at


def test_worker_without_id_generates_one_per_start(run_worker: RunWorker) -> None:
    handle = whoami.send()

    run_burst(run_worker)

    worker = Worker.objects.get()
    host = worker.hostname.split(".")[0]
    assert re.fullmatch(rf"{re.escape(host)}-{worker.pid}-[0-9a-f]{{6}}", worker.id)
    assert row_of(handle).worker_id == worker.id
    assert worker.stopped_at is not None


def test_worker_reused_id_exits_with_message(run_worker: RunWorker) -> None:
    Worker.objects.create(id="twice", hostname="elsewhere", pid=1, concurrency=1)
    handle = multiply.send(1, 2)

    process = run_worker("--burst", "--worker-id", "twice")

    assert process.returncode != 0
    assert "'twice'" in process.stderr
    assert "Traceback" not in process.stderr
    assert row_of(handle).status == TaskStatus.PENDING


@pytest.mark.parametrize(
    ("verbosity", "shown", "hidden"),
    [
        (
            "0",
            ["failed with UNHANDLED_EXCEPTION"],
            ["attempt=1 started", "claimed 1 task(s)"],
        ),
        ("1", ["started", "completed in", "failed with"], ["claimed 1 task(s)"]),
        ("2", ["started", "claimed 1 task(s)"], []),
    ],
)
def test_worker_verbosity_changes_log_output(
    run_worker: RunWorker, verbosity: str, shown: list[str], hidden: list[str]
) -> None:
    explode.using(priority=1).send("loud")
    multiply.send(2, 2)

    process = run_burst(run_worker, "-v", verbosity, "--concurrency", "1")

    for text in shown:
        assert text in process.stderr, (text, process.stderr)
    for text in hidden:
        assert text not in process.stderr, (text, process.stderr)


def test_worker_help_explains_every_option(run_worker: RunWorker) -> None:
    explanations = {
        "--queues": "Comma-separated queues to claim from",
        "--concurrency": "Tasks run at once",
        "--pool": "each task runs in a child process",
        "--burst": "Exit once nothing is claimable",
        "--max-tasks": "Exit after claiming this many tasks",
        "--poll-interval": "Seconds between looks for new tasks",
        "--drain-timeout": "Seconds to let running tasks finish",
        "--worker-id": "Identifier recorded on the tasks",
    }

    process = run_worker("--help")

    assert process.returncode == 0, process.stderr
    # Every option of the command's own is in the table above.
    own = long_options(runworker.Command()) - long_options(BaseCommand())
    assert own == set(explanations)
    text = " ".join(process.stdout.split())
    assert "Run a django-tasks-q worker" in text
    for option, explanation in explanations.items():
        assert option in text
        assert explanation in text, option


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "'0' is not 1 or more"),
        (["--max-tasks", "many"], "'many' is not a whole number"),
        (["--poll-interval", "-1"], "'-1' is not more than 0"),
        (["--queues", "emails,bad queue!"], "queue name 'bad queue!' is invalid"),
    ],
)
def test_worker_invalid_option_exits_with_message(
    run_worker: RunWorker, args: list[str], message: str
) -> None:
    handle = multiply.send(1, 2)

    process = run_worker("--burst", *args, timeout=20)

    assert process.returncode != 0
    assert message in process.stderr
    assert row_of(handle).status == TaskStatus.PENDING
    assert not Worker.objects.exists()


def test_worker_sleeping_task_does_not_block_other_slots(
    run_worker: RunWorker,
) -> None:
    slow = sleep_for.send(0.5)
    quick = [multiply.send(1, n) for n in range(3)]

    run_burst(run_worker, "--concurrency", "2")

    slow_row = row_of(slow)
    assert slow_row.finished_at is not None
    for handle in quick:
        quick_row = row_of(handle)
        assert quick_row.status == TaskStatus.COMPLETED
        assert quick_row.finished_at is not None
        assert quick_row.finished_at < slow_row.finished_at
