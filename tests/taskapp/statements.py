"""Records every statement and commit a process sends to its databases.

A worker started with ``TASKS_Q_TEST_STATEMENT_LOG=PATH`` in its environment
appends one line per round trip to PATH: the statement's SQL, or ``COMMIT``.
Recording wraps Django's own calls and passes each one on unchanged, so the
worker talks to the real database as it always does; tests count the lines
to catch a hot path that grows statements.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TextIO

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

STATEMENT_LOG_VARIABLE = "TASKS_Q_TEST_STATEMENT_LOG"

_lock = threading.Lock()


def record_statements_if_asked() -> None:
    path = os.environ.get(STATEMENT_LOG_VARIABLE)
    if not path:
        return

    log = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process)

    def on_connection_created(
        sender: object, connection: BaseDatabaseWrapper, **kwargs: Any
    ) -> None:
        connection.execute_wrappers.append(_statement_recorder(log))
        connection._commit = _commit_recorder(connection._commit, log)  # type: ignore[attr-defined]

    connection_created.connect(on_connection_created, weak=False)


def _write(log: TextIO, line: str) -> None:
    with _lock:
        log.write(line + "\n")


def _statement_recorder(log: TextIO) -> Callable[..., Any]:
    def record(
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        _write(log, " ".join(sql.split()))
        return execute(sql, params, many, context)

    return record


def _commit_recorder(commit: Callable[[], None], log: TextIO) -> Callable[[], None]:
    def record() -> None:
        _write(log, "COMMIT")
        commit()

    return record
