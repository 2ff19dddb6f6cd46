"""Server-side prepared statements for the statements every task runs.

PostgreSQL parses, analyses, rewrites and plans a statement each time it
receives its text; for the few long statements that claim, start, complete
and send tasks, that work costs the server more than running them. Prepared
once per connection, each later run skips the parsing, and after five runs
the planning too, once the server finds its cached plan no costlier than
the plans it made for the values (``plan_cache_mode`` is left at
PostgreSQL's default). The claims keep their text fit for that: see
``claims.ready_fields()``.

Django binds parameters on the client and turns psycopg's statement
preparation off (``prepare_threshold = None``), so that a project behind a
transaction-mode pooler never depends on server-side state. This module turns
it on for its own statements only, while they run, on a psycopg cursor that
binds on the server; every other query on the connection is left as Django
sends it. The cursor is still wrapped by Django, so ``execute_wrapper()``
hooks, ``connection.queries`` and error translation apply as to any query.

Prepared statements are skipped where they cannot work: on databases other
than PostgreSQL, with ``TASKS_Q["PREPARED_STATEMENTS"] = False``, and for a
database whose ``DISABLE_SERVER_SIDE_CURSORS`` is set (Django's flag for a
transaction-mode pooler such as PgBouncer). They are skipped too while the
connection logs its queries (``DEBUG``, ``CaptureQueriesContext``): Django
cannot show a prepared statement's SQL with its parameters. If the server
still loses a statement (a pooler that was not declared), the statement runs
again unprepared and that database stops using prepared statements in this
process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import connections

from .conf import get_settings

if TYPE_CHECKING:
    from django.db.backends.utils import CursorWrapper

logger = logging.getLogger("django_tasks_q.prepared")

#: Databases whose server lost a prepared statement: they run everything
#: unprepared from then on.
_given_up: set[str] = set()

#: The preparation threshold set while a statement of ours runs, on a
#: connection where Django turned preparation off: high enough that psycopg
#: never prepares a query by counting, so only ours, asked for explicitly, are.
_ONLY_WHEN_ASKED = 2**62


def uses_prepared_statements(database: str) -> bool:
    """Whether ``cursor(database)`` prepares the statements run through it."""
    connection = connections[database]
    return (
        connection.vendor == "postgresql"
        and get_settings().prepared_statements
        and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
        and database not in _given_up
    )


@contextmanager
def cursor(database: str) -> Iterator[CursorWrapper]:
    """A Django cursor on ``database`` whose statements are prepared on the
    server the first time they run on a connection, where that is possible
    (see the module docstring); otherwise a plain ``connection.cursor()``."""
    connection = connections[database]
    if connection.queries_logged or not uses_prepared_statements(database):
        with connection.cursor() as plain:
            yield plain
        return

    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    wrapped = connection.make_cursor(_preparing_cursor(raw, database))
    threshold = raw.prepare_threshold
    if threshold is None:
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    try:
        with wrapped:
            yield wrapped
    finally:
        if threshold is None:
            raw.prepare_threshold = None


def _preparing_cursor(raw: Any, database: str) -> Any:
    preparing = _preparing_cursor_class()(raw)
    preparing.database = database
    return preparing


@cache
def _preparing_cursor_class() -> type[Any]:
    # psycopg is imported here, not with the module: SQLite projects need not
    # install it.
    import psycopg

    class PreparingCursor(psycopg.Cursor[Any]):
        """Prepares what it executes; runs a statement the server lost again,
        unprepared, when no transaction is open for the error to spoil."""

        database: str

        def execute(
            self, query: Any, params: Any = None, **options: Any
        ) -> PreparingCursor:
            try:
                super().execute(query, params, prepare=True, **options)
            except psycopg.errors.InvalidSqlStatementName as exc:
                in_transaction = (
                    self.connection.info.transaction_status
                    != psycopg.pq.TransactionStatus.IDLE
                )
                _give_up(self.database, exc)
                if in_transaction:
                    raise
                super().execute(query, params, prepare=False, **options)
            return self

    return PreparingCursor


def _give_up(database: str, exc: Exception) -> None:
    _given_up.add(database)
    logger.warning(
        "Database %r lost a prepared statement (%s); its statements run "
        "unprepared from now on. Behind a transaction-mode pooler, set "
        "DISABLE_SERVER_SIDE_CURSORS on the database or "
        "TASKS_Q['PREPARED_STATEMENTS'] = False.",
        database,
        exc,
        extra={"action": "prepared_statements_off", "database": database},
    )
