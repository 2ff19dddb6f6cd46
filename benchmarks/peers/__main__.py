"""Run one measurement of one peer on a database of its own, print JSON.

Usage::

    python -m benchmarks.peers procrastinate drain --tasks 1000
    python -m benchmarks.peers django-q2 pickup --tasks 100
    python -m benchmarks.peers django-tasks-db rss --sqlite

On PostgreSQL (``--server``, default the project's development server) the
database ``bench_peer_<key>`` is created for the run and dropped after it;
``--sqlite`` uses a temporary file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from benchmarks.harness import BenchDatabase
from benchmarks.peers import PEERS
from benchmarks.peers._common import postgres_conninfo

DEFAULT_SERVER = "postgres://tasksq:tasksq@127.0.0.1:5432/tasksq"
MEASUREMENTS = ["send-one", "send-bulk", "drain", "pickup", "rss"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    parser.add_argument("peer", choices=list(PEERS))
    parser.add_argument("measurement", choices=MEASUREMENTS)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--server", default=DEFAULT_SERVER)
    options = parser.parse_args(argv)

    with _database(options) as database:
        system = PEERS[options.peer]()
        system.prepare(database)
        output: dict[str, Any] = {"system": system.name, "vendor": database.vendor}
        output.update(_measure(system, options))
    print(json.dumps(output, indent=2))
    return 0


def _measure(system: Any, options: argparse.Namespace) -> dict[str, Any]:
    count = options.tasks
    if options.measurement == "send-one":
        sent = system.send_one_at_a_time(count)
        return {"count": sent.count, "seconds": sent.seconds, "per_s": sent.per_second}
    if options.measurement == "send-bulk":
        sent = system.send_bulk(count)
        return {"count": sent.count, "seconds": sent.seconds, "per_s": sent.per_second}
    if options.measurement == "drain":
        result = system.drain(
            count, processes=options.processes, concurrency=options.concurrency
        )
        per_task = {
            "tasks_per_second": result.tasks_per_second,
            "worker_cpu_ms_per_task": result.worker_cpu_ms_per_task,
            "postgres_cpu_ms_per_task": result.postgres_cpu_ms_per_task,
            "statements_per_task": (
                None if result.statements is None else result.statements / count
            ),
            "commits_per_task": (
                None if result.commits is None else result.commits / count
            ),
        }
        return {**asdict(result), **per_task}
    if options.measurement == "pickup":
        latencies = system.pickup_latency(count)
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return {
            "count": len(latencies),
            "p50_ms": 1000 * cuts[49],
            "p95_ms": 1000 * cuts[94],
            "max_ms": 1000 * max(latencies),
        }
    return {"idle_rss_mb": system.idle_rss_mb()}


@contextlib.contextmanager
def _database(options: argparse.Namespace) -> Iterator[BenchDatabase]:
    if options.sqlite:
        with tempfile.TemporaryDirectory(prefix="bench-peers-") as folder:
            path = str(Path(folder) / "bench.sqlite3")
            yield BenchDatabase("sqlite", {"path": path})
        return

    import psycopg

    url = urlsplit(options.server)
    server_params = {
        "host": url.hostname or "127.0.0.1",
        "port": str(url.port or 5432),
        "user": unquote(url.username or ""),
        "password": unquote(url.password or ""),
    }
    name = "bench_peer_" + options.peer.replace("-", "_")
    server = postgres_conninfo(server_params, dbname="postgres")
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    try:
        yield BenchDatabase("postgresql", {**server_params, "dbname": name})
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
