"""django-tasks-db: the ORM backend of Django's task framework (``django.tasks``
on Django 6, the ``django-tasks`` backport before).

- Sending: ``noop.enqueue()``; it has no bulk API, so ``send_bulk`` and the
  drain's backlog enqueue in one ``transaction.atomic()``.
- Workers: ``django-admin db_worker --verbosity 0`` with its defaults (poll
  interval 1 s when the queue is empty, no LISTEN). A ``db_worker`` runs one
  task at a time in its one thread, so *concurrency* c is c ``db_worker``
  processes: ``processes`` x ``concurrency`` processes in all, and the idle
  worker of ``pickup_latency`` and ``idle_rss_mb`` is 4 processes.
- Timestamps: the ``started_at`` and ``finished_at`` the worker stores
  (Python's clock, host time).
- PostgreSQL and SQLite (WAL; the worker takes ``BEGIN EXCLUSIVE`` itself).
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from benchmarks.peers import _django
from benchmarks.peers._common import PeerSystem, WorkerCommand

SETTINGS = "benchmarks.peers.django_tasks_db.settings"
TABLE = "django_tasks_database_dbtaskresult"


class DjangoTasksDb(PeerSystem):
    """django-tasks-db driven through ``Task.enqueue()`` and ``db_worker``."""

    name = "django-tasks-db"

    unfinished_sql: ClassVar[str] = (
        f"SELECT count(*) FROM {TABLE} WHERE status IN ('READY', 'RUNNING')"
    )
    span_sql: ClassVar[str] = f"SELECT min(started_at), max(finished_at) FROM {TABLE}"
    task_times_sql: ClassVar[str] = (
        f"SELECT started_at, finished_at FROM {TABLE} WHERE id = %s"
    )

    def setup(self) -> None:
        _django.setup(SETTINGS, self.database)

    def worker_commands(self, processes: int, concurrency: int) -> list[WorkerCommand]:
        return [
            _django.manage(SETTINGS, "db_worker", "--verbosity", "0")
            for _ in range(processes * concurrency)
        ]

    def send_one(self) -> str:
        from benchmarks.peers.django_tasks_db.tasks import noop

        result = noop.enqueue()
        if self.database.vendor == "sqlite":  # a UUIDField is hex there
            return uuid.UUID(result.id).hex
        return result.id

    def send_many(self, count: int) -> None:
        from django.db import transaction

        from benchmarks.peers.django_tasks_db.tasks import noop

        with transaction.atomic():
            for _ in range(count):
                noop.enqueue()

    def close_connections(self) -> None:
        _django.close_connections()
