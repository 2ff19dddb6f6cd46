"""Database connection care for long-lived worker threads.

Django closes connections at the end of each request; a worker has no
requests, so it keeps each thread's connections open across tasks, whatever
``CONN_MAX_AGE`` says, and drops a connection only once it is broken.
Connections opened by threads that a task started are closed once those
threads have ended, since nothing else ever would.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

logger = logging.getLogger("django_tasks_q.worker")


def drop_broken_connections() -> None:
    """Close this thread's connections that raised errors and no longer work."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or not connection.errors_occurred:
            continue
        if connection.in_atomic_block:
            continue
        if connection.is_usable():
            connection.errors_occurred = False
            continue
        logger.warning(
            "Dropping broken database connection alias=%s",
            connection.alias,
            extra={"action": "connection_dropped", "alias": connection.alias},
        )
        connection.close()


class ConnectionLabeller:
    """Names every PostgreSQL connection the worker opens after the worker,
    so ``pg_stat_activity.application_name`` shows whose it is."""

    def __init__(self, application_name: str) -> None:
        # PostgreSQL keeps at most 63 bytes of the name.
        self.application_name = application_name.encode()[:63].decode(errors="ignore")

    def install(self) -> None:
        connection_created.connect(self._on_connection_created, weak=False)

    def uninstall(self) -> None:
        connection_created.disconnect(self._on_connection_created)

    def _on_connection_created(
        self, sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any
    ) -> None:
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('application_name', %s, false)",
                [self.application_name],
            )


class StrayConnectionCollector:
    """Tracks connections opened outside the worker's own threads.

    Call ``collect()`` after a task finishes: connections whose thread has
    ended are closed; ``owned_threads`` are the worker's own.
    """

    def __init__(self) -> None:
        self.owned_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        self._strays: list[tuple[threading.Thread, BaseDatabaseWrapper]] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        connection_created.connect(self._on_connection_created, weak=False)

    def uninstall(self) -> None:
        connection_created.disconnect(self._on_connection_created)

    def own_current_thread(self) -> None:
        self.owned_threads.add(threading.current_thread())

    def _on_connection_created(
        self, sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any
    ) -> None:
        thread = threading.current_thread()
        if thread in self.owned_threads:
            return
        with self._lock:
            self._strays.append((thread, connection))

    def collect(self) -> int:
        """Close connections left open by threads that have ended."""
        with self._lock:
            ended = [(t, c) for t, c in self._strays if not t.is_alive()]
            self._strays = [(t, c) for t, c in self._strays if t.is_alive()]

        closed = 0
        for _thread, connection in ended:
            if connection.connection is None:
                continue
            # The wrapper belongs to a dead thread; allow closing it from here.
            connection.inc_thread_sharing()
            try:
                connection.close()
                closed += 1
            finally:
                connection.dec_thread_sharing()

        if closed:
            logger.info(
                "Closed %s database connection(s) left open by ended task threads",
                closed,
                extra={"action": "stray_connections_closed", "count": closed},
            )
        return closed
