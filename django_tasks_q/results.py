"""What waiting on a task gives back: ``TaskResult``, ``TaskError``, ``TaskInfo``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from .codes import ErrorCode
from .exceptions import UnwrapError

T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task, or waiting for it, produced no value.

    ``error_code`` is one of ``ErrorCode`` or a code raised by the task with
    ``TaskFailure``; ``exception_type`` and ``traceback`` are set when an
    exception ended the task.
    """

    error_code: str
    message: str
    data: Any = None
    exception_type: str | None = None
    traceback: str | None = None

    @property
    def code(self) -> str:
        """Short alias of ``error_code``."""
        return self.error_code


class TaskResult(Generic[T, E]):
    """Either a task's return value (``ok``) or an error (``err``)."""

    __slots__ = ("_err", "_is_ok", "_ok")

    @overload
    def __init__(self, *, ok: T) -> None: ...

    @overload
    def __init__(self, *, err: E) -> None: ...

    def __init__(self, **kwargs: Any) -> None:
        if set(kwargs) not in ({"ok"}, {"err"}):
            raise TypeError("TaskResult takes exactly one of ok= or err=.")
        self._is_ok = "ok" in kwargs
        self._ok: T | None = kwargs.get("ok")
        self._err: E | None = kwargs.get("err")

    def is_ok(self) -> bool:
        return self._is_ok

    def is_err(self) -> bool:
        return not self._is_ok

    @property
    def ok(self) -> T | None:
        """The return value, or ``None`` for an error result."""
        return self._ok

    @property
    def err(self) -> E | None:
        """The error, or ``None`` for a successful result."""
        return self._err

    def unwrap(self) -> T:
        """Return the value; raise ``UnwrapError`` for an error result."""
        if not self._is_ok:
            error = self._err if isinstance(self._err, TaskError) else None
            raise UnwrapError(f"unwrap() called on an error result: {self._err}", error)
        return self._ok  # type: ignore[return-value]  # None is a valid T here.

    def unwrap_err(self) -> E:
        """Return the error; raise ``UnwrapError`` for a successful result."""
        if self._is_ok:
            raise UnwrapError(
                f"unwrap_err() called on a successful result: {self._ok!r}"
            )
        return self._err  # type: ignore[return-value]  # Set whenever not ok.

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskResult):
            return NotImplemented
        return (self._is_ok, self._ok, self._err) == (
            other._is_ok,
            other._ok,
            other._err,
        )

    __hash__ = None  # type: ignore[assignment]  # Mutable values inside.

    def __repr__(self) -> str:
        if self._is_ok:
            return f"TaskResult(ok={self._ok!r})"
        return f"TaskResult(err={self._err!r})"


def error_result(code: ErrorCode, message: str) -> TaskResult[Any, TaskError]:
    return TaskResult(err=TaskError(error_code=code, message=message))


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one task's stored row."""

    task_id: str
    task_name: str
    queue: str
    priority: int
    status: str
    attempts: int
    max_attempts: int
    enqueued_at: dt.datetime
    run_after: dt.datetime
    good_until: dt.datetime | None
    claimed_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker_id: str | None
    progress: Any
    result: TaskResult[Any, TaskError] | None = None
    failed_reason: TaskError | None = None
