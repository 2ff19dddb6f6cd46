"""procrastinate, through its Django integration (``procrastinate.contrib.django``).

- Sending: ``noop.defer()``; bulk: ``noop.batch_defer(...)``, one statement
  (``procrastinate_defer_jobs_v1`` over an array) through Django's
  connection.
- Workers: ``django-admin procrastinate worker --concurrency C`` (logging at
  WARNING, through Django's ``LOGGING``): one process, an asyncio loop
  running up to C jobs at once; the sync no-op runs in a thread of
  asgiref's ``sync_to_async``. The worker has LISTEN/NOTIFY on (its
  default) and opens its own psycopg pool
  from Django's settings. ``processes`` is that many worker processes.
- Timestamps: the ``started`` and ``succeeded`` rows of
  ``procrastinate_events`` (PostgreSQL's ``now()``: the start of the
  transaction that wrote them, host clock).
- PostgreSQL only.
"""

from __future__ import annotations

from typing import ClassVar

from benchmarks.peers import _django
from benchmarks.peers._common import PeerSystem, WorkerCommand

SETTINGS = "benchmarks.peers.procrastinate.settings"


class Procrastinate(PeerSystem):
    """procrastinate driven through ``defer`` / ``batch_defer`` and its Django
    ``procrastinate worker`` command."""

    name = "procrastinate"
    needs_postgres = True

    unfinished_sql: ClassVar[str] = (
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    )
    span_sql: ClassVar[str] = (
        "SELECT min(at) FILTER (WHERE type = 'started'),"
        " max(at) FILTER (WHERE type IN ('succeeded', 'failed'))"
        " FROM procrastinate_events"
    )
    task_times_sql: ClassVar[str] = (
        "SELECT min(at) FILTER (WHERE type = 'started'),"
        " max(at) FILTER (WHERE type = 'succeeded')"
        " FROM procrastinate_events WHERE job_id = %s"
    )

    def setup(self) -> None:
        _django.setup(SETTINGS, self.database)

    def worker_commands(self, processes: int, concurrency: int) -> list[WorkerCommand]:
        return [
            _django.manage(
                SETTINGS,
                "procrastinate",
                "worker",
                "--concurrency",
                str(concurrency),
            )
            for _ in range(processes)
        ]

    def send_one(self) -> str:
        from benchmarks.peers.procrastinate.tasks import noop

        return str(noop.defer())

    def send_many(self, count: int) -> None:
        from benchmarks.peers.procrastinate.tasks import noop

        noop.batch_defer(*({} for _ in range(count)))

    def close_connections(self) -> None:
        _django.close_connections()
