"""The claim and the fenced state transitions of a claimed task.

A claim gives each task a fresh lease token. Every later write about that
attempt is an UPDATE filtered by ``(id, status, lease_token)`` whose row
count is checked: a worker that lost its lease (its task was rescued or
cancelled meanwhile) changes nothing, and the rejected write is logged and
counted in ``fenced_out_writes``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import (
    Case,
    DurationField,
    ExpressionWrapper,
    F,
    UUIDField,
    Value,
    When,
)
from django.db.models.functions import Now

from . import prepared
from .codes import ErrorCode
from .dbclock import from_now
from .ids import new_lease_token
from .models import Task, TaskAttempt
from .notifications import FINISHED_CHANNEL, notifications_enabled, notify_finished
from .results import TaskError
from .states import AttemptOutcome, TaskStatus

logger = logging.getLogger("django_tasks_q.claims")

_fenced_out_lock = threading.Lock()
_fenced_out_total = 0


def fenced_out_count() -> int:
    """Writes rejected in this process because their lease was lost."""
    return _fenced_out_total


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """What a worker holds after a claim: the payload and the lease."""

    id: uuid.UUID
    name: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    max_attempts: int
    lease_token: uuid.UUID
    worker_id: str
    database: str
    #: Seconds one attempt may run, from ``@task(timeout=...)``.
    timeout: float | None = None
    #: Whether the claim also started the attempt (status RUNNING, attempt row
    #: open), or left the start to ``start()`` (status CLAIMED).
    started: bool = False

    @property
    def held_status(self) -> TaskStatus:
        """The status the task has while this worker holds it unfinished."""
        return TaskStatus.RUNNING if self.started else TaskStatus.CLAIMED

    def fenced(self, status: TaskStatus) -> Any:
        """The queryset an UPDATE about this attempt must go through."""
        return Task.objects.using(self.database).filter(
            pk=self.id, status=status, lease_token=self.lease_token
        )


def claim(
    *,
    worker_id: str,
    queues: list[str],
    limit: int,
    database: str,
    start: bool = False,
) -> list[ClaimedTask]:
    """Claim up to ``limit`` ready tasks in one short transaction.

    With ``start`` the claim also starts each attempt (RUNNING, attempt row
    opened), for a worker that has a free slot for every task it claims: the
    start then costs no statement of its own. Without, the tasks are CLAIMED
    and ``start()`` starts each one.

    ``SKIP LOCKED`` lets concurrent workers claim disjoint rows without
    waiting on each other; on SQLite the IMMEDIATE transaction serializes
    claims instead. Tasks past ``good_until`` are expired on the way, and
    their places in the batch go to the next ready tasks; so do tasks that
    were asked to cancel while running and then came back to the queue.
    """
    if connections[database].vendor == "postgresql":
        return _claim_on_postgresql(worker_id, queues, limit, database, start)

    with transaction.atomic(using=database):
        rows = _lock_ready_rows(queues, limit, database)
        while any(_is_expired(row) or _is_cancelled(row) for row in rows):
            _end_before_start(
                [row.pk for row in rows if _is_expired(row)],
                TaskStatus.EXPIRED,
                ErrorCode.TASK_EXPIRED,
                _EXPIRED,
                database,
            )
            _end_before_start(
                [row.pk for row in rows if _is_cancelled(row)],
                TaskStatus.CANCELLED,
                ErrorCode.TASK_CANCELLED,
                _CAME_BACK,
                database,
            )
            rows = _lock_ready_rows(queues, limit, database)

        if not rows:
            return []
        # Each attempt gets a token of its own, so that it can also serve as
        # the attempt's idempotency key.
        tokens = {row.pk: new_lease_token() for row in rows}
        started: dict[str, Any] = (
            {"status": TaskStatus.RUNNING, "started_at": Now(), "progress": None}
            if start
            else {"status": TaskStatus.CLAIMED}
        )
        Task.objects.using(database).filter(pk__in=list(tokens)).update(
            **started,
            lease_token=Case(
                *(When(pk=pk, then=Value(token)) for pk, token in tokens.items()),
                output_field=UUIDField(),
            ),
            worker_id=worker_id,
            claimed_at=Now(),
            attempts=F("attempts") + 1,
        )
        if start:
            TaskAttempt.objects.using(database).bulk_create(
                TaskAttempt(
                    task_id=row.pk,
                    number=row.attempts + 1,
                    worker_id=worker_id,
                    lease_token=tokens[row.pk],
                )
                for row in rows
            )

    return [
        ClaimedTask(
            id=row.pk,
            name=row.name,
            queue=row.queue,
            args=row.args,
            kwargs=row.kwargs,
            attempt=row.attempts + 1,
            max_attempts=row.max_attempts,
            lease_token=tokens[row.pk],
            worker_id=worker_id,
            database=database,
            timeout=row.timeout,
            started=start,
        )
        for row in rows
    ]


# One ordered walk of tasks_q_claim_idx per queue, which stops after n rows:
# a plain "queue = ANY(...)" cannot use the index order and would sort every
# pending row. The rows locked beyond the n claimed are unlocked at commit.
# The queue list and n are filled in by ready_fields().
_READY = """
ready AS (
    SELECT candidate.id
    FROM {flush_setting}{{queue_list}},
    LATERAL (
        SELECT id, priority, run_after FROM {{task_table}}
        WHERE status = 'PENDING' AND queue = queue_name AND run_after <= now()
        ORDER BY priority DESC, run_after, id
        LIMIT {{limit}}
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority DESC, candidate.run_after, candidate.id
    LIMIT {{limit}}
)"""


def ready_fields(
    queues: list[str], limit: int
) -> tuple[dict[str, str], dict[str, Any]]:
    """The text that ``_READY`` is formatted with, and the parameters it
    then takes, for a claim of ``limit`` tasks from ``queues``.

    The queues are a VALUES list and the limit a number in the text, never an
    array or a number given as a parameter: so the statement's text says how
    many rows each step yields. PostgreSQL then estimates the plan it caches
    for a prepared statement (made without the parameters' values) as cheap
    as a plan made for each run, and uses it instead of planning every run,
    which cost the server more than running the statement. Each queue count
    and limit makes a statement of its own, prepared once per connection.
    """
    if queues:
        rows = ", ".join(f"(%(queue_{n})s::text)" for n in range(len(queues)))
        queue_list = f"(VALUES {rows}) AS queue_list(queue_name)"
    else:
        # A batch of completions that claims nothing: VALUES cannot be empty.
        queue_list = "(SELECT NULL::text WHERE false) AS queue_list(queue_name)"
    fields = {"queue_list": queue_list, "limit": str(int(limit))}
    return fields, {f"queue_{n}": queue for n, queue in enumerate(queues)}


# A claim on its own commits without waiting for its WAL flush
# (synchronous_commit off for this transaction only): a claim that a server
# crash loses leaves the task PENDING, so it runs again and the first run's
# writes are fenced out, as after any rescue. Every write that ends a task
# still waits.
_POSTGRESQL_READY = """
WITH no_flush_wait AS (
    SELECT set_config('synchronous_commit', 'off', true)
),""" + _READY.format(flush_setting="no_flush_wait, ")

_POSTGRESQL_CLAIMED_COLUMNS = """
    task.id, task.name, task.queue, task.args::text, task.kwargs::text,
    task.attempts, task.max_attempts, task.lease_token, task.timeout,
    task.good_until IS NOT NULL AND task.good_until <= now() AS expired,
    task.cancel_requested_at IS NOT NULL AS cancelled"""

_POSTGRESQL_CLAIM = (
    _POSTGRESQL_READY
    + """
UPDATE {task_table} AS task
SET status = 'CLAIMED', lease_token = gen_random_uuid(),
    worker_id = %(worker_id)s, claimed_at = now(), attempts = task.attempts + 1
FROM ready
WHERE task.id = ready.id
RETURNING"""
    + _POSTGRESQL_CLAIMED_COLUMNS
)

# The attempt rows of the tasks that will run are inserted by the same
# statement; expired and cancelled ones are ended right after it.
_START_CLAIMED = (
    """
claimed AS (
    UPDATE {task_table} AS task
    SET status = 'RUNNING', lease_token = gen_random_uuid(),
        worker_id = %(worker_id)s, claimed_at = now(), started_at = now(),
        progress = NULL, attempts = task.attempts + 1
    FROM ready
    WHERE task.id = ready.id
    RETURNING"""
    + _POSTGRESQL_CLAIMED_COLUMNS
    + """
),
opened AS (
    INSERT INTO {attempt_table} (task_id, number, worker_id, lease_token,
        outcome, started_at, error_code, error_message, exception_type,
        traceback)
    SELECT id, attempts, %(worker_id)s, lease_token, 'RUNNING', now(),
        '', '', '', ''
    FROM claimed
    WHERE NOT (expired OR cancelled)
)"""
)

_POSTGRESQL_CLAIM_AND_START = (
    _POSTGRESQL_READY + ",\n" + _START_CLAIMED + "\nSELECT * FROM claimed\n"
)


def postgresql_claim(
    *, start: bool, queues: list[str], limit: int, worker_id: str
) -> tuple[str, dict[str, Any]]:
    """The claim statement run on PostgreSQL and its parameters; tests
    EXPLAIN it to pin its plan."""
    template = _POSTGRESQL_CLAIM_AND_START if start else _POSTGRESQL_CLAIM
    fields, parameters = ready_fields(queues, limit)
    sql = template.format(
        task_table=Task._meta.db_table,
        attempt_table=TaskAttempt._meta.db_table,
        **fields,
    )
    return sql, parameters | {"worker_id": worker_id}


def _claim_on_postgresql(
    worker_id: str, queues: list[str], limit: int, database: str, start: bool
) -> list[ClaimedTask]:
    """The claim as one statement, which the ORM cannot express: select and
    lock the ready rows, give each a lease of its own and, with ``start``,
    open its attempt, in one round trip."""
    claimed: list[ClaimedTask] = []
    while len(claimed) < limit:
        sql, parameters = postgresql_claim(
            start=start, queues=queues, limit=limit - len(claimed), worker_id=worker_id
        )
        with prepared.cursor(database) as cursor:
            cursor.execute(sql, parameters)
            rows = cursor.fetchall()

        runnable = _runnable(rows, worker_id, database, started=start)
        claimed += runnable
        # Places taken by tasks that could not run go to the next ready ones.
        if len(runnable) == len(rows):
            break
    return claimed


def _runnable(
    rows: list[tuple[Any, ...]], worker_id: str, database: str, *, started: bool
) -> list[ClaimedTask]:
    """The tasks of claim ``rows`` (``_POSTGRESQL_CLAIMED_COLUMNS``) that may
    run; one found expired or cancelled is ended at once instead."""
    runnable = []
    for row in rows:
        task = ClaimedTask(
            id=row[0],
            name=row[1],
            queue=row[2],
            args=json.loads(row[3]),
            kwargs=json.loads(row[4]),
            attempt=row[5],
            max_attempts=row[6],
            lease_token=row[7],
            worker_id=worker_id,
            database=database,
            timeout=row[8],
            started=started,
        )
        expired, cancelled = row[9], row[10]
        if expired:
            _end_unstarted(task, TaskStatus.EXPIRED, ErrorCode.TASK_EXPIRED, _EXPIRED)
        elif cancelled:
            _end_unstarted(
                task, TaskStatus.CANCELLED, ErrorCode.TASK_CANCELLED, _CAME_BACK
            )
        else:
            runnable.append(task)
    return runnable


_EXPIRED = "The task was not started before its good_until deadline."
_CAME_BACK = "The task was cancelled while it ran, then came back."


def _end_unstarted(
    claimed: ClaimedTask, status: TaskStatus, code: ErrorCode, message: str
) -> None:
    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(claimed.held_status).update(
            status=status,
            started_at=None,
            finished_at=Now(),
            attempts=F("attempts") - 1,
            error_code=code,
            error_message=message,
        )
        if updated:
            notify_finished(claimed.database, [claimed.id])
    logger.info(
        "Task id=%s ended %s before it started",
        claimed.id,
        status,
        extra={"action": f"task_{status.lower()}", "task_id": str(claimed.id)},
    )


_POSTGRESQL_NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM MIN(next.run_after) - now())
FROM unnest(%s::text[]) AS queue_name,
LATERAL (
    SELECT run_after FROM {table}
    WHERE status = 'PENDING' AND queue = queue_name
    ORDER BY run_after
    LIMIT 1
) AS next
"""


def seconds_until_next(*, queues: list[str], database: str) -> float | None:
    """Seconds until the earliest pending task in ``queues`` comes due, on the
    database clock; ``None`` when nothing is pending. One index probe per
    queue, on ``tasks_q_schedule_idx``."""
    if connections[database].vendor == "postgresql":
        # Raw SQL: it runs while a just-claimed task is starting on another
        # thread, and the ORM's Python would hold the GIL it needs.
        with prepared.cursor(database) as cursor:
            cursor.execute(
                _POSTGRESQL_NEXT_DUE.format(table=Task._meta.db_table), [queues]
            )
            (seconds,) = cursor.fetchone()
        return None if seconds is None else float(seconds)

    waits = []
    for queue in queues:
        wait = (
            Task.objects.using(database)
            .pending()
            .filter(queue=queue)
            .order_by("run_after")
            .annotate(
                due_in=ExpressionWrapper(
                    F("run_after") - Now(), output_field=DurationField()
                )
            )
            .values_list("due_in", flat=True)
            .first()
        )
        if wait is not None:
            waits.append(wait.total_seconds())
    return min(waits, default=None)


def _lock_ready_rows(queues: list[str], limit: int, database: str) -> list[Task]:
    return list(
        Task.objects.using(database)
        .ready(queues)
        .select_for_update(skip_locked=True)
        .annotate(db_now=Now())
        .only(
            "id",
            "name",
            "queue",
            "args",
            "kwargs",
            "attempts",
            "max_attempts",
            "good_until",
            "timeout",
            "cancel_requested_at",
        )[:limit]
    )


def _is_expired(row: Any) -> bool:
    return row.good_until is not None and row.good_until <= row.db_now


def _is_cancelled(row: Any) -> bool:
    return row.cancel_requested_at is not None and not _is_expired(row)


def _end_before_start(
    task_ids: list[uuid.UUID],
    status: TaskStatus,
    code: ErrorCode,
    message: str,
    database: str,
) -> None:
    """End locked ready tasks that must not run: expired or cancelled."""
    if not task_ids:
        return
    Task.objects.using(database).filter(pk__in=task_ids).update(
        status=status, finished_at=Now(), error_code=code, error_message=message
    )
    notify_finished(database, task_ids)
    for task_id in task_ids:
        logger.info(
            "Task id=%s ended %s before it started",
            task_id,
            status,
            extra={"action": f"task_{status.lower()}", "task_id": str(task_id)},
        )


def _fenced_out(claimed: ClaimedTask, write: str) -> None:
    global _fenced_out_total
    with _fenced_out_lock:
        _fenced_out_total += 1
    logger.warning(
        "Task id=%s attempt=%s lost its lease; the %s write was not applied",
        claimed.id,
        claimed.attempt,
        write,
        extra={
            "action": "write_fenced_out",
            "task_id": str(claimed.id),
            "attempt": claimed.attempt,
            "write": write,
        },
    )


_POSTGRESQL_START = """
WITH started AS (
    UPDATE {task_table}
    SET status = 'RUNNING', started_at = now(), progress = NULL
    WHERE id = %s AND status = 'CLAIMED' AND lease_token = %s
    RETURNING id
)
INSERT INTO {attempt_table} (task_id, number, worker_id, lease_token, outcome,
    started_at, error_code, error_message, exception_type, traceback)
SELECT id, %s, %s, %s, 'RUNNING', now(), '', '', '', '' FROM started
"""


def start(claimed: ClaimedTask) -> bool:
    """Move a claimed task to RUNNING and open its attempt row."""
    if connections[claimed.database].vendor == "postgresql":
        # One statement, so the task starts one round trip after its claim.
        sql = _POSTGRESQL_START.format(
            task_table=Task._meta.db_table, attempt_table=TaskAttempt._meta.db_table
        )
        with prepared.cursor(claimed.database) as cursor:
            cursor.execute(
                sql,
                [
                    claimed.id,
                    claimed.lease_token,
                    claimed.attempt,
                    claimed.worker_id,
                    claimed.lease_token,
                ],
            )
            updated = cursor.rowcount
        if not updated:
            _fenced_out(claimed, "start")
        return bool(updated)

    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(TaskStatus.CLAIMED).update(
            status=TaskStatus.RUNNING, started_at=Now(), progress=None
        )
        if updated:
            TaskAttempt.objects.using(claimed.database).create(
                task_id=claimed.id,
                number=claimed.attempt,
                worker_id=claimed.worker_id,
                lease_token=claimed.lease_token,
            )
    if not updated:
        _fenced_out(claimed, "start")
    return bool(updated)


# The notification for result waiters, if any, is sent from RETURNING. The
# attempt is found by the parameters, not by a join to "done": a plan made
# without the values (a prepared statement's) could then walk the attempt
# index by number alone, that is every attempt row.
_COMPLETE_RUNNING = """
done AS (
    UPDATE {task_table}
    SET status = 'COMPLETED', result = %(result)s::jsonb, finished_at = now(),
        error_code = '', error_message = '', error_data = NULL,
        exception_type = '', traceback = ''
    WHERE id = %(task_id)s AND status = 'RUNNING' AND lease_token = %(lease_token)s
    RETURNING id{announce}
),
closed AS (
    UPDATE {attempt_table} AS attempt
    SET outcome = 'COMPLETED', finished_at = now()
    WHERE attempt.task_id = %(task_id)s AND attempt.number = %(attempt)s
        AND EXISTS (SELECT FROM done)
)"""

_POSTGRESQL_COMPLETE = "WITH" + _COMPLETE_RUNNING + "\nSELECT id FROM done\n"

# The completion and the slot's next claim share one statement, so one round
# trip and one commit per task serve a busy slot. The commit waits for its
# WAL flush, as the completion needs. The one row left-joined to the claimed
# rows says whether the completion applied even when nothing was claimed.
_POSTGRESQL_COMPLETE_AND_CLAIM = (
    "WITH"
    + _COMPLETE_RUNNING
    + ","
    + _READY.format(flush_setting="")
    + ",\n"
    + _START_CLAIMED
    + """
SELECT (SELECT count(*) FROM done) AS completed, claimed.*
FROM (SELECT 1) AS one LEFT JOIN claimed ON true
"""
)


@dataclass(frozen=True, slots=True)
class NextClaim:
    """The claim of one task, to run in the statement of the completion that
    freed its slot."""

    queues: list[str]


def complete(claimed: ClaimedTask, result: Any) -> bool:
    """Store the result of a RUNNING task and close its attempt."""
    if connections[claimed.database].vendor == "postgresql":
        return _complete_on_postgresql(claimed, result)

    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(TaskStatus.RUNNING).update(
            status=TaskStatus.COMPLETED,
            result=result,
            finished_at=Now(),
            error_code="",
            error_message="",
            error_data=None,
            exception_type="",
            traceback="",
        )
        if updated:
            _close_attempt(claimed, AttemptOutcome.COMPLETED, None)
            notify_finished(claimed.database, [claimed.id])
    if not updated:
        _fenced_out(claimed, "complete")
    return bool(updated)


def can_complete_and_claim(database: str) -> bool:
    """Whether ``complete_and_claim()`` works on ``database``: only PostgreSQL
    can complete and claim in one statement, so that a retried write never
    repeats half of it."""
    return connections[database].vendor == "postgresql"


@dataclass(frozen=True, slots=True)
class CompletedAndClaimed:
    """What ``complete_and_claim()`` did."""

    #: Whether the completion applied (``False``: its lease was lost).
    completed: bool
    #: The claimed task to run, started, if the claim found one that may run.
    next_task: ClaimedTask | None
    #: Whether the claim took a task, runnable or not (one found expired or
    #: cancelled is ended instead): more are probably ready.
    filled: bool


def complete_and_claim(
    claimed: ClaimedTask, result: Any, then: NextClaim
) -> CompletedAndClaimed:
    """``complete()``, and claim and start the next task of ``then`` in the
    same statement.

    The claim does not depend on the completion: a fenced-out completion still
    claims, and the caller must run what it got.
    """
    assert can_complete_and_claim(claimed.database)
    fields, ready_parameters = ready_fields(then.queues, 1)
    sql = _POSTGRESQL_COMPLETE_AND_CLAIM.format(
        task_table=Task._meta.db_table,
        attempt_table=TaskAttempt._meta.db_table,
        announce=_announcement(claimed.database),
        **fields,
    )
    parameters = (
        _completion_parameters(claimed, result)
        | ready_parameters
        | {"worker_id": claimed.worker_id}
    )
    with prepared.cursor(claimed.database) as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()

    completed = bool(rows[0][0])
    if not completed:
        _fenced_out(claimed, "complete")
    # Without a claimed task, the one row's claim columns are all NULL.
    claim_rows = [row[1:] for row in rows if row[1] is not None]
    runnable = _runnable(claim_rows, claimed.worker_id, claimed.database, started=True)
    return CompletedAndClaimed(
        completed=completed,
        next_task=runnable[0] if runnable else None,
        filled=bool(claim_rows),
    )


def _announcement(database: str, id_column: str = "id") -> str:
    """The RETURNING addition that tells result waiters a task finished."""
    if not notifications_enabled(database):
        return ""
    return f", pg_notify('{FINISHED_CHANNEL}', {id_column}::text)"


# The completions of several slots and their next claims in one statement:
# ``complete_and_claim()`` for many tasks at once.
_POSTGRESQL_COMPLETE_MANY_AND_CLAIM = (
    """WITH
finished AS (
    SELECT * FROM unnest(%(task_ids)s::uuid[], %(lease_tokens)s::uuid[],
        %(attempts)s::integer[], %(results)s::jsonb[])
        AS finished(id, lease_token, attempt, result)
),
done AS (
    UPDATE {task_table} AS task
    SET status = 'COMPLETED', result = finished.result, finished_at = now(),
        error_code = '', error_message = '', error_data = NULL,
        exception_type = '', traceback = ''
    FROM finished
    WHERE task.id = finished.id AND task.status = 'RUNNING'
        AND task.lease_token = finished.lease_token
    RETURNING task.id, finished.attempt{announce}
),
closed AS (
    UPDATE {attempt_table} AS attempt
    SET outcome = 'COMPLETED', finished_at = now()
    FROM done
    WHERE attempt.task_id = done.id AND attempt.number = done.attempt
),"""
    + _READY.format(flush_setting="")
    + ",\n"
    + _START_CLAIMED
    + """
SELECT (SELECT array_agg(id) FROM done) AS completed, claimed.*
FROM (SELECT 1) AS one LEFT JOIN claimed ON true
"""
)


@dataclass(frozen=True, slots=True)
class FinishedTask:
    """One completion of ``complete_many_and_claim()``."""

    claimed: ClaimedTask
    result: Any
    #: The claim of the slot's next task, or ``None`` for none.
    then: NextClaim | None


def complete_many_and_claim(finished: list[FinishedTask]) -> list[CompletedAndClaimed]:
    """``complete_and_claim()`` for tasks that finished on several slots, in
    one statement and one commit; one outcome per task, in order.

    Every ``then`` that is not ``None`` must name the same queues. The claimed
    tasks go to the tasks that asked for a claim, in order, as far as they
    reach.
    """
    database = finished[0].claimed.database
    assert can_complete_and_claim(database)
    claims_wanted = [entry.then for entry in finished if entry.then is not None]
    queues = claims_wanted[0].queues if claims_wanted else []
    assert all(then.queues == queues for then in claims_wanted)

    fields, ready_parameters = ready_fields(queues, len(claims_wanted))
    sql = _POSTGRESQL_COMPLETE_MANY_AND_CLAIM.format(
        task_table=Task._meta.db_table,
        attempt_table=TaskAttempt._meta.db_table,
        announce=_announcement(database, id_column="task.id"),
        **fields,
    )
    parameters: dict[str, Any] = ready_parameters | {
        "task_ids": [entry.claimed.id for entry in finished],
        "lease_tokens": [entry.claimed.lease_token for entry in finished],
        "attempts": [entry.claimed.attempt for entry in finished],
        "results": [
            None if entry.result is None else json.dumps(entry.result)
            for entry in finished
        ],
        "worker_id": finished[0].claimed.worker_id,
    }
    with prepared.cursor(database) as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()

    completed_ids = set(rows[0][0] or ())
    claim_rows = [row[1:] for row in rows if row[1] is not None]
    runnable = iter(
        _runnable(claim_rows, finished[0].claimed.worker_id, database, started=True)
    )
    # Places taken by tasks that could not run leave the claim short, though
    # more may be ready: those slots try again on their own.
    filled = len(claim_rows) == len(claims_wanted)

    outcomes = []
    for entry in finished:
        completed = entry.claimed.id in completed_ids
        if not completed:
            _fenced_out(entry.claimed, "complete")
        next_task = next(runnable, None) if entry.then is not None else None
        outcomes.append(
            CompletedAndClaimed(
                completed=completed,
                next_task=next_task,
                filled=next_task is not None or (entry.then is not None and filled),
            )
        )
    return outcomes


def _completion_parameters(claimed: ClaimedTask, result: Any) -> dict[str, Any]:
    return {
        # SQL NULL for None, as the ORM stores it.
        "result": None if result is None else json.dumps(result),
        "task_id": claimed.id,
        "lease_token": claimed.lease_token,
        "attempt": claimed.attempt,
    }


def _complete_on_postgresql(claimed: ClaimedTask, result: Any) -> bool:
    """The completion as one autocommitted statement: the task row, its
    attempt and the notification for result waiters in one round trip."""
    sql = _POSTGRESQL_COMPLETE.format(
        task_table=Task._meta.db_table,
        attempt_table=TaskAttempt._meta.db_table,
        announce=_announcement(claimed.database),
    )
    with prepared.cursor(claimed.database) as cursor:
        cursor.execute(sql, _completion_parameters(claimed, result))
        updated = cursor.rowcount
    if not updated:
        _fenced_out(claimed, "complete")
    return bool(updated)


def fail(claimed: ClaimedTask, error: TaskError, retry_in: float | None) -> bool:
    """End a RUNNING attempt with ``error``.

    With ``retry_in`` seconds the task goes back to PENDING, claimable after
    that delay on the database clock; without, it ends FAILED.
    """
    error_fields = {
        "error_code": error.error_code,
        "error_message": error.message,
        "error_data": error.data,
        "exception_type": error.exception_type or "",
        "traceback": error.traceback or "",
    }
    if retry_in is None:
        changes: dict[str, Any] = {"status": TaskStatus.FAILED, "finished_at": Now()}
    else:
        changes = {
            "status": TaskStatus.PENDING,
            "run_after": from_now(retry_in),
            "lease_token": None,
        }

    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(TaskStatus.RUNNING).update(**changes, **error_fields)
        if updated:
            _close_attempt(claimed, AttemptOutcome.FAILED, error)
            if retry_in is None:
                notify_finished(claimed.database, [claimed.id])
    if not updated:
        _fenced_out(claimed, "fail")
    return bool(updated)


def release(claimed: ClaimedTask) -> bool:
    """Give a task whose attempt never ran back to the queue unchanged; an
    attempt row opened by the claim is removed with it."""
    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(claimed.held_status).update(
            status=TaskStatus.PENDING,
            lease_token=None,
            worker_id="",
            claimed_at=None,
            started_at=None,
            attempts=F("attempts") - 1,
        )
        if updated and claimed.started:
            TaskAttempt.objects.using(claimed.database).filter(
                task_id=claimed.id, number=claimed.attempt
            ).delete()
    if not updated:
        _fenced_out(claimed, "release")
    return bool(updated)


def give_back(
    claimed: ClaimedTask,
    reason: str,
    code: ErrorCode = ErrorCode.WORKER_STOPPED,
    *,
    claimable_in: float = 0.0,
) -> bool:
    """Return a RUNNING task to the queue, by default because its worker is
    stopping.

    The attempt counts, and is closed as interrupted with ``code`` and
    ``reason``. ``claimable_in`` seconds keep others from starting the task
    while this process, whose thread still runs it, is on its way out.
    """
    error = TaskError(error_code=code, message=reason)
    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(TaskStatus.RUNNING).update(
            status=TaskStatus.PENDING,
            run_after=from_now(claimable_in) if claimable_in else Now(),
            lease_token=None,
            worker_id="",
            error_code=error.error_code,
            error_message=error.message,
        )
        if updated:
            _close_attempt(claimed, AttemptOutcome.INTERRUPTED, error)
    if not updated:
        _fenced_out(claimed, "give back")
    return bool(updated)


def cancel_running(claimed: ClaimedTask, message: str) -> bool:
    """End a RUNNING attempt as CANCELLED: it stopped on a cancel request."""
    error = TaskError(error_code=ErrorCode.TASK_CANCELLED, message=message)
    with transaction.atomic(using=claimed.database):
        updated = claimed.fenced(TaskStatus.RUNNING).update(
            status=TaskStatus.CANCELLED,
            finished_at=Now(),
            error_code=error.error_code,
            error_message=error.message,
        )
        if updated:
            _close_attempt(claimed, AttemptOutcome.CANCELLED, error)
            notify_finished(claimed.database, [claimed.id])
    if not updated:
        _fenced_out(claimed, "cancel")
    return bool(updated)


def settle_abandoned(claimed: ClaimedTask, reason: str) -> bool:
    """Hand back an attempt whose outcome could not be stored, whatever state
    it reached: a started one is given back, an unstarted one released."""
    with transaction.atomic(using=claimed.database):
        if claimed.fenced(TaskStatus.CLAIMED).exists():
            return release(claimed)
        if claimed.fenced(TaskStatus.RUNNING).exists():
            return give_back(claimed, reason, ErrorCode.OUTCOME_LOST)
    return False


def cancel_requests(
    *, worker_id: str, database: str
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """The (task id, lease token) of this worker's running tasks that were
    asked to cancel."""
    rows = (
        Task.objects.using(database)
        .filter(
            worker_id=worker_id,
            status=TaskStatus.RUNNING,
            cancel_requested_at__isnull=False,
        )
        .values_list("id", "lease_token")
    )
    return {(task_id, token) for task_id, token in rows if token is not None}


def set_progress(claimed: ClaimedTask, progress: Any) -> bool:
    """Store progress for a RUNNING task; fenced like every other write."""
    updated = claimed.fenced(TaskStatus.RUNNING).update(progress=progress)
    if not updated:
        _fenced_out(claimed, "progress")
    return bool(updated)


def _close_attempt(
    claimed: ClaimedTask, outcome: AttemptOutcome, error: TaskError | None
) -> None:
    TaskAttempt.objects.using(claimed.database).filter(
        task_id=claimed.id, number=claimed.attempt
    ).update(
        outcome=outcome,
        finished_at=Now(),
        error_code=error.error_code if error else "",
        error_message=error.message if error else "",
        exception_type=(error.exception_type or "") if error else "",
        traceback=(error.traceback or "") if error else "",
    )
