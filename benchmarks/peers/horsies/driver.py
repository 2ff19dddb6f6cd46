"""horsies: a PostgreSQL task queue of its own (not Django-based).

- Sending: ``noop.send()``, each send committed on its own. horsies has no
  bulk send and no way to enqueue in a caller's transaction, so
  ``send_bulk`` is one ``send()`` after another, and the drain's backlog is
  made to appear at once by freezing the workers: their whole process tree
  is stopped (SIGSTOP) while the backlog is sent and continued (SIGCONT)
  after the last send, so that they find it all waiting, as they would
  after a bulk commit (the NOTIFYs queue up meanwhile). The sends fall in the
  measurement window, as the other peers' bulk inserts do: their statements
  and commits (one per task) are in the figures.
- Workers: ``horsies worker benchmarks.peers.horsies.app:app --processes C
  --loglevel WARNING``: one coordinator process (asyncio, LISTEN/NOTIFY,
  claims) and a pool of C executor child processes, one task at a time
  each. *concurrency* c is ``--processes c``; ``processes`` is that many
  workers. Its other defaults stay, among them ``--max-tasks-per-child 100``
  (each child is replaced after 100 tasks, with the ``spawn`` start method).
  Set-up starts and stops one worker first, so that the partitions of its
  heartbeat history exist before several workers start at once.
- Timestamps: ``started_at`` (set in the executor child) and
  ``terminal_at`` (database time of the terminal transition) of
  ``horsies_task_history``, where a finished task's row moves.
- PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import os
from typing import ClassVar

from benchmarks.peers._common import (
    DATABASE_ENV,
    PeerSystem,
    WorkerCommand,
    Workers,
    database_to_env,
)

APP = "benchmarks.peers.horsies.app:app"


def _horsies_command() -> str:
    import sys
    from pathlib import Path

    return str(Path(sys.executable).parent / "horsies")


class Horsies(PeerSystem):
    """horsies driven through ``task.send()`` and ``horsies worker``."""

    name = "horsies"
    needs_postgres = True
    #: ``--max-tasks-per-child`` of the workers; None keeps horsies' default.
    max_tasks_per_child: ClassVar[int | None] = None

    unfinished_sql: ClassVar[str] = "SELECT count(*) FROM horsies_tasks"
    span_sql: ClassVar[str] = (
        "SELECT min(started_at), max(terminal_at) FROM horsies_task_history"
    )
    task_times_sql: ClassVar[str] = (
        "SELECT started_at, terminal_at FROM horsies_task_history WHERE task_id = %s"
    )

    def setup(self) -> None:
        # The app module reads the database from the environment on import.
        os.environ[DATABASE_ENV] = database_to_env(self.database)
        from horsies import is_err

        from benchmarks.peers.horsies.app import make_app

        schema_app = make_app()

        async def initialize() -> None:
            broker = schema_app.get_broker()
            try:
                result = await broker.ensure_schema_initialized()
            finally:
                await broker.close_async()
            if is_err(result):
                raise RuntimeError(f"horsies schema set-up failed: {result}")

        asyncio.run(initialize())
        self._create_heartbeat_partitions()

    def _create_heartbeat_partitions(self) -> None:
        """Start one worker, wait until it is up, and stop it.

        A starting horsies worker creates the partitions its heartbeats go
        to. Two workers starting together on a fresh database race for that,
        and the loser refuses to start ("another worker owns the partition
        coverage gate"); once the partitions exist, workers start side by
        side.
        """
        argv = [_horsies_command(), "worker", APP, "--processes", "1"]
        workers = Workers([WorkerCommand([*argv, "--loglevel", "INFO"])], self.database)
        try:
            workers.wait_idle(ready=lambda: "Worker started" in workers.log_tail())
        finally:
            workers.stop()

    def worker_commands(self, processes: int, concurrency: int) -> list[WorkerCommand]:
        argv = [
            _horsies_command(),
            "worker",
            APP,
            "--processes",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ]
        if self.max_tasks_per_child is not None:
            argv += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        return [WorkerCommand(list(argv)) for _ in range(processes)]

    def send_one(self) -> str:
        from horsies import is_err

        from benchmarks.peers.horsies.app import noop

        result = noop.send()
        if is_err(result):
            raise RuntimeError(f"horsies send failed: {result.err_value}")
        return str(result.ok_value.task_id)

    def send_many(self, count: int) -> None:
        for _ in range(count):
            self.send_one()

    def backlog(self, count: int, workers: Workers) -> None:
        workers.suspend()
        try:
            self.send_many(count)
        finally:
            workers.resume()

    def close_connections(self) -> None:
        from benchmarks.peers.horsies.app import app

        app.get_broker().close()
