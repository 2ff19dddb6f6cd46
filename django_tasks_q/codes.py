"""Stable error codes carried by ``TaskSendError`` and ``TaskError``.

The values are part of the public contract: they are stored in the database,
matched by ``auto_retry_for`` and documented in ``docs/error-codes.md``.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every error code the library itself writes or returns."""

    # Raised by send(), send_async(), schedule() and send_many().
    SEND_SUPPRESSED = "SEND_SUPPRESSED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    ENQUEUE_FAILED = "ENQUEUE_FAILED"

    # Returned by TaskHandle.get() without the task having failed.
    WAIT_TIMEOUT = "WAIT_TIMEOUT"
    TASK_NOT_FOUND = "TASK_NOT_FOUND"
    TASK_NOT_COMMITTED = "TASK_NOT_COMMITTED"

    # Written by the worker when a task ends without a result.
    UNHANDLED_EXCEPTION = "UNHANDLED_EXCEPTION"
    TASK_NOT_REGISTERED = "TASK_NOT_REGISTERED"
    PAYLOAD_INVALID = "PAYLOAD_INVALID"
    RESULT_NOT_SERIALIZABLE = "RESULT_NOT_SERIALIZABLE"
    TASK_EXPIRED = "TASK_EXPIRED"
    TASK_CANCELLED = "TASK_CANCELLED"
    TASK_TIMEOUT = "TASK_TIMEOUT"
    WORKER_CRASHED = "WORKER_CRASHED"
    WORKER_STOPPED = "WORKER_STOPPED"
    OUTCOME_LOST = "OUTCOME_LOST"

    # Returned by TaskHandle.get() when a stored result cannot be read back.
    RESULT_INVALID = "RESULT_INVALID"


#: Failures that a retry cannot fix: the same payload fails the same way.
NEVER_RETRIED = frozenset(
    {
        ErrorCode.TASK_NOT_REGISTERED,
        ErrorCode.PAYLOAD_INVALID,
        ErrorCode.RESULT_NOT_SERIALIZABLE,
        ErrorCode.TASK_EXPIRED,
        ErrorCode.TASK_CANCELLED,
    }
)
