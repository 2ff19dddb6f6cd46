"""django-q2 with its ORM broker (``Q_CLUSTER["orm"]``).

- Sending: ``async_task("...noop")``; it has no bulk API, so ``send_bulk``
  and the drain's backlog call it in one ``transaction.atomic()``.
- Workers: ``django-admin qcluster``. A cluster is a sentinel process that
  forks a pusher (polls the ORM broker every 0.2 s, its default, and hands
  tasks over a multiprocessing queue), a monitor (saves results and deletes
  the queue rows) and ``workers`` worker processes: *concurrency* c is
  ``workers = c``, and ``processes`` is that many clusters.
- Timestamps: ``stopped`` of ``django_q_task``, set by the worker process
  (Python's clock) when the function returns. django-q2's ``started`` is
  the time of ``async_task()``, not of the start, so the start is taken as
  the ``stopped`` of the same task, which the no-op follows within
  microseconds: the drain runs from the first ``stopped`` to the last, and
  a pick-up is ``stopped`` minus the send. ``save_limit`` is 0 so that every
  result stays (see the settings).
- PostgreSQL and SQLite.
"""

from __future__ import annotations

from typing import ClassVar

from benchmarks.peers import _django
from benchmarks.peers._common import PeerSystem, WorkerCommand

SETTINGS = "benchmarks.peers.django_q2.settings"


class DjangoQ2(PeerSystem):
    """django-q2 driven through ``async_task`` and ``qcluster``."""

    name = "django-q2"

    #: Queue rows are deleted once the monitor has saved the result.
    unfinished_sql: ClassVar[str] = "SELECT count(*) FROM django_q_ormq"
    #: ``started`` is when the task was sent; see the module's docstring.
    span_sql: ClassVar[str] = "SELECT min(stopped), max(stopped) FROM django_q_task"
    task_times_sql: ClassVar[str] = (
        "SELECT stopped, stopped FROM django_q_task WHERE id = %s"
    )

    def setup(self) -> None:
        _django.setup(SETTINGS, self.database)

    def worker_commands(self, processes: int, concurrency: int) -> list[WorkerCommand]:
        commands = []
        for _ in range(processes):
            command = _django.manage(SETTINGS, "qcluster")
            command.env["BENCH_Q_WORKERS"] = str(concurrency)
            commands.append(command)
        return commands

    def send_one(self) -> str:
        from django_q.tasks import async_task

        from benchmarks.peers.django_q2.tasks import NOOP

        return str(async_task(NOOP))

    def send_many(self, count: int) -> None:
        from django.db import transaction
        from django_q.tasks import async_task

        from benchmarks.peers.django_q2.tasks import NOOP

        with transaction.atomic():
            for _ in range(count):
                async_task(NOOP)

    def close_connections(self) -> None:
        _django.close_connections()
