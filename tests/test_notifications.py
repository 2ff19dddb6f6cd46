"""LISTEN/NOTIFY wake-ups, with real workers and real listening connections.

Most tests run the workers (and the waiters here) with a 30 s poll
interval, so anything that happens within a second can only have been
woken by a notification.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.test import override_settings

from django_tasks_q import claims
from django_tasks_q.models import Task
from django_tasks_q.notifications import (
    FINISHED_CHANNEL,
    finished_tasks,
    open_listening_connection,
    queue_channel,
)
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.api import add
from tests.taskapp.tasks.reliability import hold

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's"
)

LONG_POLL = 30.0


@pytest.fixture
def long_poll(worker_env: dict[str, str]) -> Iterator[None]:
    """Poll every 30 s, in the workers and in this process's waiters."""
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"POLL_INTERVAL": LONG_POLL})
    with override_settings(TASKS_Q={"POLL_INTERVAL": LONG_POLL}):
        yield


def start_idle_worker(start_worker: StartWorker, worker_id: str) -> WorkerProcess:
    """Start a worker and return once it listens and has gone idle."""
    worker = start_worker("--worker-id", worker_id)
    wait_until(lambda: "listens for new tasks" in worker.output(), timeout=30)
    time.sleep(0.3)  # Let its first claim pass end: it now sleeps for 30 s.
    return worker


def seconds_until_started(task_id: str, timeout: float = 10) -> float:
    began = time.monotonic()
    wait_until(
        lambda: Task.objects.filter(pk=task_id, started_at__isnull=False).exists(),
        timeout=timeout,
        interval=0.01,
    )
    return time.monotonic() - began


def listening_backends(worker_id: str) -> int:
    """How many of the worker's connections listen: connected, done with its
    ``LISTEN``, and idle (or pinging) since."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND state = 'idle' "
            "AND (query LIKE 'LISTEN %%' OR query = 'SELECT 1')",
            [f"tasks-q worker {worker_id} listener"],
        )
        (count,) = cursor.fetchone()
    return int(count)


class RawListener:
    """A plain psycopg connection that collects notifications on a channel."""

    def __init__(self, channel: str) -> None:
        self.connection = open_listening_connection("default", "tasks-q test")
        self.connection.execute(
            psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
        )

    def collect(self, seconds: float) -> list[str]:
        return [n.payload for n in self.connection.notifies(timeout=seconds)]

    def close(self) -> None:
        self.connection.close()


@postgresql_only
def test_idle_worker_starts_a_sent_task_within_a_second(
    long_poll: None, start_worker: StartWorker
) -> None:
    start_idle_worker(start_worker, "notified-1")

    handle = add.send(1, 2)

    assert seconds_until_started(handle.task_id) < 1.0
    assert handle.get(timeout_ms=5_000).unwrap() == 3


@postgresql_only
def test_get_async_returns_within_a_second_of_completion(
    long_poll: None, start_worker: StartWorker
) -> None:
    start_idle_worker(start_worker, "notified-2")

    async def send_and_wait() -> tuple[float, Any]:
        handle = await hold.send_async(1.0)
        began = time.monotonic()
        result = await handle.get_async(timeout_ms=20_000)
        return time.monotonic() - began, result

    elapsed, result = asyncio.run(send_and_wait())

    assert result.is_ok(), result
    # One second of work, plus well under a second of pick-up and wake-up;
    # a poll would have taken 30 s.
    assert elapsed < 2.0, elapsed


@postgresql_only
def test_each_of_200_waiters_is_woken_only_for_its_own_task(
    long_poll: None, start_worker: StartWorker
) -> None:
    handles = add.send_many([((n, n), {}) for n in range(200)])
    wakes: Counter[str] = Counter()
    dispatcher = finished_tasks("default")

    def waker(task_id: str) -> Any:
        return lambda: wakes.update([task_id])

    subscriptions = [(h.task_id, waker(h.task_id)) for h in handles]
    for task_id, wake in subscriptions:
        assert dispatcher.subscribe(task_id, wake)
    try:
        start_worker("--worker-id", "notified-3", "--concurrency", "8")

        async def wait_all() -> list[Any]:
            return await asyncio.gather(
                *(h.get_async(timeout_ms=30_000) for h in handles)
            )

        began = time.monotonic()
        results = asyncio.run(wait_all())
        elapsed = time.monotonic() - began
    finally:
        for task_id, wake in subscriptions:
            dispatcher.unsubscribe(task_id, wake)

    assert [r.unwrap() for r in results] == [n + n for n in range(200)]
    assert elapsed < LONG_POLL / 2, elapsed
    # Every waiter heard of its own task, once, and of no other.
    assert wakes == Counter({h.task_id: 1 for h in handles})


@postgresql_only
def test_worker_listens_again_after_its_listening_backend_is_killed(
    worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    poll_interval = 2.0
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"POLL_INTERVAL": poll_interval})
    worker = start_worker("--worker-id", "relisten-1")
    # The worker logs that it listens before its listener thread connects;
    # a connection killed before it listened is a first connect, not a drop.
    wait_until(
        lambda: listening_backends("relisten-1"),
        timeout=30,
        message="the worker's listening connection",
    )

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            ["tasks-q worker relisten-1 listener"],
        )
        assert cursor.fetchone() == (1,)
    # Sent while nobody listens: the poll (or the claim pass after the
    # reconnect) must still pick it up within the poll interval.
    meanwhile = add.send(1, 1)
    assert seconds_until_started(meanwhile.task_id) < poll_interval + 0.5

    wait_until(lambda: "listens again" in worker.output(), timeout=30)
    time.sleep(0.3)
    after = add.send(2, 2)
    assert seconds_until_started(after.task_id) < 1.0


@postgresql_only
def test_a_send_notifies_once_per_queue_per_transaction_and_never_on_rollback(
    worker_env: dict[str, str],
) -> None:
    listener = RawListener(queue_channel("default"))
    try:
        with transaction.atomic():
            add.send(1, 1)
            add.send(2, 2)
            add.send_many([((n, n), {}) for n in range(10_000)])
        committed = listener.collect(1.0)

        with transaction.atomic():
            add.send(3, 3)
            transaction.set_rollback(True)
        rolled_back = listener.collect(1.0)

        add.send(4, 4)
        add.send(5, 5)
        autocommitted = listener.collect(1.0)
    finally:
        listener.close()

    assert committed == [""]
    assert rolled_back == []
    assert autocommitted == ["", ""]


@postgresql_only
def test_finishing_a_task_announces_its_id() -> None:
    listener = RawListener(FINISHED_CHANNEL)
    try:
        handle = add.send(1, 1)
        handle.cancel()
        announced = listener.collect(1.0)
    finally:
        listener.close()

    assert announced == [handle.task_id]


@postgresql_only
def test_scheduled_task_starts_on_time_not_at_the_next_poll(
    long_poll: None, start_worker: StartWorker
) -> None:
    start_idle_worker(start_worker, "on-time-1")

    handle = add.schedule(1, 3, 4)

    started = seconds_until_started(handle.task_id, timeout=20)
    assert 0.9 <= started < 2.0, started
    row = Task.objects.get(pk=handle.task_id)
    assert row.started_at is not None
    # On the database clock, it started no sooner than it was due.
    assert row.started_at >= row.run_after


@postgresql_only
def test_a_busy_worker_stops_listening_and_listens_again_once_dry(
    long_poll: None, start_worker: StartWorker
) -> None:
    worker = start_worker("--worker-id", "busy-1", "-v", "3")
    wait_until(lambda: "listens for new tasks" in worker.output(), timeout=30)
    time.sleep(0.3)

    # A backlog of 2 s or so at 4 threads: every claim is full.
    backlog = hold.send_many([((0.04,), {}) for _ in range(200)])
    wait_until(lambda: "stops listening" in worker.output(), timeout=10)
    for handle in backlog:
        assert handle.get(timeout_ms=30_000).is_ok()
    wait_until(lambda: "listens again" in worker.output(), timeout=5)

    # The poll is 30 s away: only a notification can start this one now.
    handle = add.send(1, 2)
    assert seconds_until_started(handle.task_id) < 1.0


def test_without_listen_everything_is_still_processed_by_polling(
    worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps({"LISTEN": False})
    with override_settings(TASKS_Q={"LISTEN": False}):
        worker = start_worker("--worker-id", "polling-1", "--poll-interval", "0.2")
        handles = [add.send(n, 1) for n in range(20)]

        results = [h.get(timeout_ms=20_000) for h in handles]

    assert [r.unwrap() for r in results] == [n + 1 for n in range(20)]
    assert "polls for new tasks" in worker.output()
    assert "listens for new tasks" not in worker.output()


def test_a_worker_knows_when_the_next_scheduled_task_comes_due() -> None:
    queues = ["default", "emails"]
    assert claims.seconds_until_next(queues=queues, database="default") is None

    add.schedule(30, 1, 1)
    add.using(queue="emails").schedule(10, 2, 2)
    add.using(queue="elsewhere").schedule(1, 3, 3)

    due_in = claims.seconds_until_next(queues=queues, database="default")
    assert due_in is not None
    assert 8 < due_in <= 10
