"""How fast an idle worker picks a task up, and how fast ``get()`` hears back.

Usage::

    python benchmarks/latency.py                    # SQLite
    DATABASE_URL=postgres://user:password@localhost/db python benchmarks/latency.py

One ``runworker`` process (threads, concurrency 4) waits on a fresh database
of its own (``bench_latency_<random>`` on the server of ``DATABASE_URL``, or a
temporary SQLite file); the worker and the one-at-a-time loop are shared
with the throughput benchmark (``benchmarks/tasksq.py``). Tasks are sent one
at a time, each after the last one's ``get()`` returned, so the worker is
idle at every send. For each task:

- send-to-start: from the moment ``send()`` returned (the row is committed)
  to the moment the task's body runs (the ``clock`` task returns the time it
  was called);
- finish-to-get: from the ``finished_at`` the worker stored to the moment
  ``get()`` returned.

Both use the one clock of this host (PostgreSQL's ``now()`` and Python's
``time.time()`` read the same system clock). On PostgreSQL the run is done
with ``LISTEN`` on, then off (pure polling at ``POLL_INTERVAL`` = 1 s), and
``schedule(1)`` is timed from the send to the body's call. The table goes to
standard output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent

# Targets of the notifications work, on the 2-core development machine.
TARGETS = {
    "send-to-start, LISTEN": "p50 < 2.5 ms, p99 < 4 ms",
    "finish-to-get, LISTEN": "p50 < 5 ms",
    "schedule(1): send-to-start": "1.00 to 1.05 s",
}


@dataclass
class Series:
    name: str
    unit: str
    values: list[float]

    def row(self) -> list[str]:
        scale = 1000 if self.unit == "ms" else 1
        cuts = statistics.quantiles(self.values, n=100, method="inclusive")
        figures = [cuts[49], cuts[94], cuts[98], max(self.values)]
        precision = 2 if self.unit == "ms" else 3
        return [
            self.name,
            str(len(self.values)),
            *(f"{value * scale:.{precision}f} {self.unit}" for value in figures),
            TARGETS.get(self.name, ""),
        ]


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    postgres = bool(os.environ.get("DATABASE_URL"))

    # Run as a script, only benchmarks/ is on the path: add the checkout.
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    from benchmarks.harness import fresh_database
    from benchmarks.tasksq import configure

    with fresh_database("postgresql" if postgres else "sqlite", "latency") as database:
        environment = configure(database)

        series: list[Series] = []
        modes = [True, False] if postgres else [False]
        for listen in modes:
            count = options.tasks if listen or not postgres else options.polling_tasks
            label = "LISTEN" if listen else "polling"
            with _worker(environment, listen):
                starts, gets = _one_at_a_time(count)
                series += [
                    Series(f"send-to-start, {label}", "ms", starts),
                    Series(f"finish-to-get, {label}", "ms", gets),
                ]
                if listen:
                    delays = _scheduled(options.scheduled)
                    series.append(Series("schedule(1): send-to-start", "s", delays))

        print(_header(postgres))
        print(_table(series))

        from django.db import connections

        connections.close_all()
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure pick-up and result latency of an idle worker.",
        epilog="PostgreSQL when DATABASE_URL is set, else SQLite.",
    )
    parser.add_argument(
        "--tasks", type=int, default=500, help="Tasks sent with LISTEN on (500)."
    )
    parser.add_argument(
        "--polling-tasks",
        type=int,
        default=100,
        help="Tasks sent with LISTEN off, each waiting up to a 1 s poll (100).",
    )
    parser.add_argument(
        "--scheduled", type=int, default=20, help="schedule(1) sends timed (20)."
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _worker(environment: dict[str, str], listen: bool) -> Iterator[None]:
    """One runworker (threads, concurrency 4), idle, with LISTEN on or off in
    it and in this process."""
    from django.test import override_settings

    from benchmarks.tasksq import running_workers

    settings = {"LISTEN": listen}
    with (
        running_workers(environment, concurrency=4, settings=settings),
        override_settings(TASKS_Q=settings),
    ):
        yield


def _one_at_a_time(count: int) -> tuple[list[float], list[float]]:
    from benchmarks.tasksq import one_at_a_time

    return one_at_a_time(count)


def _scheduled(count: int) -> list[float]:
    from benchmarks.benchapp.tasks import clock

    delays = []
    for _ in range(count):
        handle = clock.schedule(1)
        committed_at = time.time()
        started_at = handle.get(timeout_ms=10_000).unwrap()
        delays.append(started_at - committed_at)
    return delays


def _header(postgres: bool) -> str:
    from django.db import connection

    lines = [f"Database: {connection.vendor}"]
    if postgres:
        version, fsync, synchronous_commit = (
            _show(setting)
            for setting in ("server_version", "fsync", "synchronous_commit")
        )
        lines[0] += (
            f" {version} (fsync={fsync}, synchronous_commit={synchronous_commit})"
        )
    lines.append(f"CPUs: {os.cpu_count()}, Python {sys.version.split()[0]}")
    return "\n".join(lines) + "\n"


def _show(setting: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {setting}")
        (value,) = cursor.fetchone()
    return str(value)


def _table(series: list[Series]) -> str:
    header = ["Measure", "n", "p50", "p95", "p99", "max", "Target"]
    rows: list[Any] = [header, *(item.row() for item in series)]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        lines.append(
            " | ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )
        if number == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
