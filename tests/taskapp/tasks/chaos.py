"""The probe task of tests/reliability/: it records every execution it gets.

Each execution writes a row to ``chaos_probe_execution`` when it starts and
its end time when it finishes, through a connection of its own, opened with
the raw driver in autocommit mode. A row is therefore committed before the
task's own work begins and owes nothing to the worker's transactions: an
execution is counted even when its worker is killed right after, and a
rescued attempt that runs again shows up as a second row.

Times are ``time.time()`` of the host. Every worker is a subprocess of the
test run, so the probes and the fault injector share one clock.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, connections

from django_tasks_q import current_task, task

if TYPE_CHECKING:
    import psycopg

    ProbeConnection = psycopg.Connection[Any] | sqlite3.Connection

TABLE = "chaos_probe_execution"

#: Names the probe's PostgreSQL sessions, so that a fault aimed at a worker's
#: own connections (by their application_name) never hits the probe's.
APPLICATION_NAME = "tasks-q chaos probe"

#: Seconds the probe keeps retrying a write while the database is unreachable
#: (a PostgreSQL restart, a long-locked SQLite file) before the task fails.
WRITE_RETRY_SECONDS = 120.0

SQLITE_BUSY_TIMEOUT = 30.0

_COLUMNS = """
    execution_id VARCHAR(36) PRIMARY KEY,
    task_id VARCHAR(36) NOT NULL,
    task_key INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    lease_token VARCHAR(36) NOT NULL,
    worker_id VARCHAR(255) NOT NULL,
    pid INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION
"""

_local = threading.local()


@task
def probe(key: int, seconds: float = 0.0) -> int:
    """Record this execution, work for ``seconds``, record its end.

    Returns ``key``, so a result can be matched to the call that sent it.
    """
    execution_id = record_start(key)
    if seconds:
        time.sleep(seconds)
    record_end(execution_id)
    return key


def record_start(key: int) -> str:
    """Insert the row of the execution running in this thread; return its id."""
    context = current_task()
    execution_id = str(uuid.uuid4())
    row = [
        execution_id,
        context.task_id,
        key,
        context.attempt,
        context.lease_token,
        context.worker_id,
        os.getpid(),
        time.time(),
    ]

    # A retry after a lost commit acknowledgement must not count twice.
    _write(
        f"INSERT INTO {TABLE} (execution_id, task_id, task_key, attempt, "
        "lease_token, worker_id, pid, started_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (execution_id) DO NOTHING",
        row,
    )
    return execution_id


def record_end(execution_id: str) -> None:
    _write(
        f"UPDATE {TABLE} SET finished_at = %s WHERE execution_id = %s",
        [time.time(), execution_id],
    )


def create_table(connection: ProbeConnection) -> None:
    execute(connection, f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS})")


def connect() -> ProbeConnection:
    """Open an autocommit connection to the default database's probe table."""
    settings = connections[DEFAULT_DB_ALIAS].settings_dict

    connection: ProbeConnection
    if settings["ENGINE"] == "django.db.backends.sqlite3":
        connection = sqlite3.connect(
            settings["NAME"],
            timeout=SQLITE_BUSY_TIMEOUT,
            isolation_level=None,
        )
        # As in the project's settings: WAL commits survive a killed process
        # without an fsync each.
        connection.execute("PRAGMA synchronous=NORMAL")
    else:
        import psycopg

        parameters = {
            "dbname": settings["NAME"],
            "user": settings.get("USER"),
            "password": settings.get("PASSWORD"),
            "host": settings.get("HOST"),
            "port": settings.get("PORT"),
        }
        # Commits stay synchronous, at some cost in throughput, so that a
        # recorded execution outlives even a server crash or an immediate
        # restart.
        connection = psycopg.connect(
            autocommit=True,
            application_name=APPLICATION_NAME,
            **{name: value for name, value in parameters.items() if value},
        )

    create_table(connection)
    return connection


def execute(
    connection: ProbeConnection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Run ``sql``, written with ``%s`` placeholders, on either driver; return
    the rows it selected."""
    if isinstance(connection, sqlite3.Connection):
        return connection.execute(sql.replace("%s", "?"), params).fetchall()
    # psycopg takes bytes for a query that is not a literal string.
    with connection.execute(sql.encode(), params) as result:
        return result.fetchall() if result.description else []


def _connection() -> ProbeConnection:
    """This thread's probe connection, opened on first use.

    A forked child inherits its parent's thread-local connection; it opens
    its own and leaves that one alone, since closing it would end the
    parent's session.
    """
    if getattr(_local, "pid", None) != os.getpid():
        _local.connection = connect()
        _local.pid = os.getpid()
    connection: ProbeConnection = _local.connection
    return connection


def _write(sql: str, params: list[Any]) -> None:
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    backoff = 0.05

    while True:
        try:
            execute(_connection(), sql, params)
            return
        except Exception as exc:
            if not _is_outage(exc) or time.monotonic() + backoff > deadline:
                raise
            print(f"chaos probe: write failed ({exc}); retrying", file=sys.stderr)
            _drop_connection()
        time.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


def _drop_connection() -> None:
    with suppress(Exception):
        _local.connection.close()
    _local.pid = None


def _is_outage(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
