"""Turning a call into a stored task row: validate, encode, insert."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.utils import timezone

from . import prepared
from .codes import ErrorCode
from .conf import PRIORITY_RANGE, get_settings, is_valid_priority, is_valid_queue_name
from .dbclock import from_now
from .exceptions import TaskSendError
from .handle import TaskHandle
from .ids import uuid7
from .notifications import (
    already_notified,
    notifications_enabled,
    queue_channel,
    remember_notified,
)
from .registry import registry
from .serialization import SerializationError, encode

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .models import Task as TaskRow
    from .task import BaseTask

logger = logging.getLogger("django_tasks_q.sending")

#: Rows per INSERT statement in send_many(); keeps statements well under
#: every backend's parameter limit.
BULK_BATCH_SIZE = 500


@dataclass(frozen=True, slots=True)
class SendOptions:
    queue: str
    priority: int
    run_at: dt.datetime | None = None
    delay: float | int | dt.timedelta | None = None
    good_until: dt.datetime | dt.timedelta | None = None


def _fail(
    task: BaseTask[Any, Any],
    code: ErrorCode,
    message: str,
    parameter: str | None = None,
) -> TaskSendError:
    return TaskSendError(code, message, task_name=task.name, parameter=parameter)


def _check_options(task: BaseTask[Any, Any], options: SendOptions) -> None:
    if not is_valid_queue_name(options.queue):
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r} cannot be sent to queue {options.queue!r}: use "
            "letters, digits, '_', '.' and '-' (at most 48 characters).",
        )
    if not is_valid_priority(options.priority):
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r}: priority must be an integer between "
            f"{PRIORITY_RANGE.start} and {PRIORITY_RANGE.stop - 1}, "
            f"not {options.priority!r}.",
        )
    if options.run_at is not None and options.delay is not None:
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r}: give run_at or delay, not both.",
        )
    if options.run_at is not None and (
        not isinstance(options.run_at, dt.datetime) or timezone.is_naive(options.run_at)
    ):
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r}: run_at must be an aware datetime, "
            f"not {options.run_at!r}.",
        )
    if options.delay is not None:
        seconds = (
            options.delay.total_seconds()
            if isinstance(options.delay, dt.timedelta)
            else options.delay
        )
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or seconds < 0
        ):
            raise _fail(
                task,
                ErrorCode.VALIDATION_FAILED,
                f"Task {task.name!r}: delay must be a number of seconds >= 0, "
                f"not {options.delay!r}.",
            )
    good_until = options.good_until
    if good_until is not None and not (
        isinstance(good_until, dt.timedelta)
        or (isinstance(good_until, dt.datetime) and timezone.is_aware(good_until))
    ):
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r}: good_until must be an aware datetime or a "
            f"timedelta, not {good_until!r}.",
        )


def _parameter_names(task: BaseTask[Any, Any], count: int) -> list[str]:
    """Name each of ``count`` positional arguments for error messages."""
    names: list[str] = []
    var_positional = None
    for parameter in task.signature.signature.parameters.values():
        if parameter.kind in (
            parameter.POSITIONAL_ONLY,
            parameter.POSITIONAL_OR_KEYWORD,
        ):
            names.append(parameter.name)
        elif parameter.kind == parameter.VAR_POSITIONAL:
            var_positional = parameter.name
    extra = [f"{var_positional or 'args'}[{i}]" for i in range(count - len(names))]
    return (names + extra)[:count]


def _encode_call(
    task: BaseTask[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    try:
        task.signature.bind(tuple(args), kwargs)
    except TypeError as exc:
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r} cannot be sent: {exc}.",
        ) from exc

    try:
        names = _parameter_names(task, len(args)) if args else []
        encoded_args = [
            encode(value, name) for name, value in zip(names, args, strict=True)
        ]
        encoded_kwargs = {name: encode(value, name) for name, value in kwargs.items()}
    except SerializationError as exc:
        parameter = exc.path.split("[")[0].split(".")[0]
        raise _fail(
            task,
            ErrorCode.VALIDATION_FAILED,
            f"Task {task.name!r} cannot be sent: argument {exc.path!r}: {exc.reason}.",
            parameter,
        ) from exc
    return encoded_args, encoded_kwargs


@dataclass(frozen=True, slots=True)
class EncodedCall:
    """One call of a task, validated and encoded, ready to be stored."""

    id: uuid.UUID
    args: list[Any]
    kwargs: dict[str, Any]
    #: The same, as the JSON text that is stored.
    args_json: str
    kwargs_json: str


_compact_encoder = json.JSONEncoder(separators=(",", ":"))


def _compact_json(value: Any) -> str:
    if not value:
        # No arguments, or no keyword arguments: the common case.
        return "[]" if isinstance(value, list) else "{}"
    return _compact_encoder.encode(value)


def _check_size(task: BaseTask[Any, Any], call: EncodedCall, limit: int) -> None:
    # The size of the compact [args, kwargs] array.
    size = len(call.args_json) + len(call.kwargs_json) + 3
    if size <= limit:
        return

    args, kwargs = call.args, call.kwargs

    names = _parameter_names(task, len(args))
    sizes = {
        name: len(json.dumps(value)) for name, value in zip(names, args, strict=True)
    }
    sizes.update({name: len(json.dumps(value)) for name, value in kwargs.items()})
    largest = max(sizes, key=sizes.__getitem__)
    raise _fail(
        task,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"Task {task.name!r} cannot be sent: its arguments take {size} bytes, over "
        f"the {limit}-byte MAX_PAYLOAD_BYTES limit; the largest is {largest!r} "
        f"({sizes[largest]} bytes).",
        largest,
    )


def _encode(
    task: BaseTask[Any, Any], args: Sequence[Any], kwargs: dict[str, Any], limit: int
) -> EncodedCall:
    encoded_args, encoded_kwargs = _encode_call(task, args, kwargs)
    call = EncodedCall(
        id=uuid7(),
        args=encoded_args,
        kwargs=encoded_kwargs,
        # ensure_ascii (the default) makes characters and bytes one and the
        # same for the size limit.
        args_json=_compact_json(encoded_args),
        kwargs_json=_compact_json(encoded_kwargs),
    )
    _check_size(task, call, limit)
    return call


def _build_row(
    task: BaseTask[Any, Any], options: SendOptions, call: EncodedCall
) -> TaskRow:
    """The model instance of ``call``, for the ORM's insert."""
    from .models import Task as TaskRow

    row = TaskRow(
        id=call.id,
        name=task.name,
        queue=options.queue,
        priority=options.priority,
        args=call.args,
        kwargs=call.kwargs,
        max_attempts=task.max_attempts,
        timeout=task.timeout,
    )
    if options.run_at is not None:
        row.run_after = options.run_at
    elif options.delay:
        row.run_after = from_now(options.delay)
    if isinstance(options.good_until, dt.timedelta):
        row.good_until = from_now(options.good_until)
    else:
        row.good_until = options.good_until
    return row


def send_calls(
    task: BaseTask[Any, Any],
    options: SendOptions,
    calls: Sequence[tuple[Sequence[Any], dict[str, Any]]],
) -> list[TaskHandle[Any]]:
    """Validate every call, then insert them all or none of them."""
    if registry.sends_suppressed:
        raise _fail(
            task,
            ErrorCode.SEND_SUPPRESSED,
            f"Task {task.name!r} was sent while task modules were being imported; "
            "send tasks from functions or views, never at module level.",
        )
    _check_options(task, options)
    settings = get_settings()
    limit = settings.max_payload_bytes
    encoded = [_encode(task, args, kwargs, limit) for args, kwargs in calls]

    database = settings.database
    if not encoded:
        pass
    elif connections[database].vendor == "postgresql":
        _insert_on_postgresql(task, options, encoded, database)
    else:
        # Other databases poll: there is nobody to notify.
        _insert(task, [_build_row(task, options, call) for call in encoded], database)

    handles: list[TaskHandle[Any]] = [
        TaskHandle(call.id, task_name=task.name) for call in encoded
    ]
    _track_commit(handles, database)

    logger.debug(
        "Sent %s run(s) of task name=%s queue=%s",
        len(encoded),
        task.name,
        options.queue,
        extra={"action": "task_sent", "task_name": task.name, "count": len(encoded)},
    )
    return handles


def _store_failed(task: BaseTask[Any, Any], exc: DatabaseError) -> TaskSendError:
    return TaskSendError(
        ErrorCode.ENQUEUE_FAILED,
        f"Task {task.name!r} could not be stored: {exc}",
        task_name=task.name,
        retryable=isinstance(exc, OperationalError | InterfaceError),
    )


def _insert(task: BaseTask[Any, Any], rows: list[TaskRow], database: str) -> None:
    from .models import Task as TaskRow

    try:
        if len(rows) == 1:
            rows[0].save(force_insert=True, using=database)
        elif rows:
            with transaction.atomic(using=database):
                TaskRow.objects.using(database).bulk_create(
                    rows, batch_size=BULK_BATCH_SIZE
                )
    except DatabaseError as exc:
        raise _store_failed(task, exc) from exc


# Every call of one send shares the task and the options: only the id and the
# arguments vary. They travel as three arrays, or for a single call as three
# values: quoting arrays on the client costs a single send a sixth of its CPU.
_POSTGRESQL_INSERT = """
WITH inserted AS (
    INSERT INTO {table} (id, args, kwargs, name, queue, priority, status,
        run_after, good_until, attempts, max_attempts, crashes, timeout,
        worker_id, error_code, error_message, exception_type, traceback)
    SELECT call.id, call.args, call.kwargs, %(name)s, %(queue)s, %(priority)s,
        'PENDING', {run_after}, {good_until}, 0, %(max_attempts)s, 0,
        %(timeout)s, '', '', '', '', ''
    FROM {calls} AS call(id, args, kwargs)
)
SELECT {announce}
"""
_MANY_CALLS = "unnest(%(ids)s::uuid[], %(args)s::jsonb[], %(kwargs)s::jsonb[])"
_ONE_CALL = "(VALUES (%(id)s::uuid, %(args)s::jsonb, %(kwargs)s::jsonb))"


def _insert_on_postgresql(
    task: BaseTask[Any, Any],
    options: SendOptions,
    calls: list[EncodedCall],
    database: str,
) -> None:
    """Insert every call, and announce them to the queue's workers, in one
    statement: the ORM's per-row work would cost more than the database's."""
    from .models import Task as TaskRow

    parameters: dict[str, Any] = {
        "name": task.name,
        "queue": options.queue,
        "priority": options.priority,
        "max_attempts": task.max_attempts,
        "timeout": task.timeout,
    }
    if len(calls) == 1:
        (call,) = calls
        parameters.update(id=call.id, args=call.args_json, kwargs=call.kwargs_json)
    else:
        parameters.update(
            ids=[call.id for call in calls],
            args=[call.args_json for call in calls],
            kwargs=[call.kwargs_json for call in calls],
        )
    if options.run_at is not None:
        run_after = "%(run_at)s"
        parameters["run_at"] = options.run_at
    elif options.delay:
        run_after = "now() + %(delay)s"
        parameters["delay"] = _as_timedelta(options.delay)
    else:
        run_after = "now()"
    if options.good_until is None:
        good_until = "NULL::timestamptz"
    elif isinstance(options.good_until, dt.timedelta):
        good_until = "now() + %(good_for)s"
        parameters["good_for"] = options.good_until
    else:
        good_until = "%(good_until)s"
        parameters["good_until"] = options.good_until

    connection = connections[database]
    announce = notifications_enabled(database) and not already_notified(
        connection, options.queue
    )
    if announce:
        parameters["channel"] = queue_channel(options.queue)
    sql = _POSTGRESQL_INSERT.format(
        table=TaskRow._meta.db_table,
        calls=_ONE_CALL if len(calls) == 1 else _MANY_CALLS,
        run_after=run_after,
        good_until=good_until,
        announce="pg_notify(%(channel)s, '')" if announce else "1",
    )

    try:
        with prepared.cursor(database) as cursor:
            cursor.execute(sql, parameters)
    except DatabaseError as exc:
        raise _store_failed(task, exc) from exc
    if announce:
        remember_notified(connection, options.queue)


def _as_timedelta(offset: float | int | dt.timedelta) -> dt.timedelta:
    if isinstance(offset, dt.timedelta):
        return offset
    return dt.timedelta(seconds=offset)


def _track_commit(handles: list[TaskHandle[Any]], database: str) -> None:
    """Let handles sent inside a transaction see whether it is still open, so
    ``get()`` can refuse to wait on a task no worker can see yet."""
    if not connections[database].in_atomic_block:
        return

    def committed() -> None:
        for handle in handles:
            handle._commit_callback = None

    for handle in handles:
        handle._commit_callback = committed
    transaction.on_commit(committed, using=database)
