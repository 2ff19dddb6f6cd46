"""Run ONE measurement of ONE system in this process, and print it as JSON.

Usage::

    python -m benchmarks.measure SYSTEM MEASUREMENT --database postgresql \\
        [--count N] [--processes P] [--concurrency C]
    python -m benchmarks.measure --list

``benchmarks/run.py`` calls this once per measurement, so that systems with
different Django settings (each peer configures Django its own way) never
share a process, and every measurement starts from an empty database: a
fresh ``bench_*`` PostgreSQL database on the server of ``DATABASE_URL``, or
a temporary SQLite file, dropped when the measurement ends.

SYSTEM is ``django-tasks-q`` or a key of ``benchmarks.peers.PEERS``.
MEASUREMENT is one of:

- ``send-one``: ``send_one_at_a_time(count)``;
- ``send-bulk``: ``send_bulk(count)``;
- ``drain``: ``drain(count, processes=P, concurrency=C)``;
- ``latency``: ``pickup_latency(count)`` (plus ``result_latency`` in seconds
  for systems that have ``latencies()``, django-tasks-q);
- ``idle-rss``: ``idle_rss_mb()``.

The last line of standard output is one JSON object: ``{"ok": true, ...,
"result": {...}}``, or ``{"ok": false, "error": "..."}`` with exit code 1
when the system is missing or the measurement failed. Anything else the
system writes goes to standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks.harness import DrainResult, SendResult, System, fresh_database

MEASUREMENTS = ("send-one", "send-bulk", "drain", "latency", "idle-rss")

OURS = "django-tasks-q"


def system_factories() -> tuple[dict[str, Callable[[], System]], str | None]:
    """Every system by name, ours first; and why the peers are missing, if
    ``benchmarks.peers`` cannot be imported."""
    from benchmarks.tasksq import TasksQSystem

    factories: dict[str, Callable[[], System]] = {OURS: TasksQSystem}
    try:
        from benchmarks.peers import PEERS
    except Exception as exc:  # Any failure only means: no peers.
        return factories, f"{type(exc).__name__}: {exc}"
    for name in PEERS:
        # Looking a peer up imports it (an optional install): do it only
        # when that peer is measured, so a missing one fails only itself.
        factories[name] = functools.partial(_make_peer, name)
    return factories, None


def _make_peer(name: str) -> System:
    from benchmarks.peers import PEERS

    system: System = PEERS[name]()
    return system


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    if options.list:
        factories, problem = system_factories()
        print(json.dumps({"systems": list(factories), "peers_problem": problem}))
        return 0

    report: dict[str, Any] = {
        "system": options.system,
        "measurement": options.measurement,
        "database": options.database,
        "count": options.count,
        "processes": options.processes,
        "concurrency": options.concurrency,
    }
    began = time.monotonic()
    # Whatever the system prints must not spoil the JSON on stdout.
    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            report["result"] = _measure(options)
        report["ok"] = True
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        report["ok"] = False
        report["error"] = f"{type(exc).__name__}: {exc}".strip()
    report["wall_seconds"] = round(time.monotonic() - began, 3)
    print(json.dumps(report), file=real_stdout, flush=True)
    return 0 if report["ok"] else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.measure",
        description="Run one measurement of one system and print it as JSON.",
    )
    parser.add_argument("system", nargs="?", help=f"{OURS} or a key of PEERS")
    parser.add_argument("measurement", nargs="?", choices=MEASUREMENTS)
    parser.add_argument(
        "--database", choices=("postgresql", "sqlite"), default="postgresql"
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--list", action="store_true", help="List the systems.")
    options = parser.parse_args(argv)
    if not options.list and (options.system is None or options.measurement is None):
        parser.error("give SYSTEM and MEASUREMENT, or --list")
    return options


def _measure(options: argparse.Namespace) -> dict[str, Any]:
    factories, problem = system_factories()
    if options.system not in factories:
        known = ", ".join(factories)
        extra = f"; peers unavailable: {problem}" if problem else ""
        raise LookupError(f"unknown system {options.system!r} (known: {known}{extra})")
    system = factories[options.system]()

    with fresh_database(options.database, options.measurement) as database:
        system.prepare(database)
        if options.measurement == "send-one":
            return _send(system.send_one_at_a_time(options.count))
        if options.measurement == "send-bulk":
            return _send(system.send_bulk(options.count))
        if options.measurement == "drain":
            drained = system.drain(
                options.count,
                processes=options.processes,
                concurrency=options.concurrency,
            )
            return _drain(drained)
        if options.measurement == "latency":
            latencies = getattr(system, "latencies", None)
            if callable(latencies):
                pickup, result = latencies(options.count)
                return {"pickup": list(pickup), "result": list(result)}
            return {"pickup": system.pickup_latency(options.count)}
        if options.measurement == "idle-rss":
            return {"mb": system.idle_rss_mb()}
    raise AssertionError(options.measurement)


def _send(sent: SendResult) -> dict[str, Any]:
    return {
        "count": sent.count,
        "seconds": sent.seconds,
        "per_second": sent.per_second,
    }


def _drain(drained: DrainResult) -> dict[str, Any]:
    def per_task(value: int | None) -> float | None:
        return None if value is None else value / drained.tasks

    return {
        "tasks": drained.tasks,
        "seconds": drained.seconds,
        "tasks_per_second": drained.tasks_per_second,
        "worker_cpu_seconds": drained.worker_cpu_seconds,
        "postgres_cpu_seconds": drained.postgres_cpu_seconds,
        "worker_cpu_ms_per_task": drained.worker_cpu_ms_per_task,
        "postgres_cpu_ms_per_task": drained.postgres_cpu_ms_per_task,
        "statements": drained.statements,
        "commits": drained.commits,
        "statements_per_task": per_task(drained.statements),
        "commits_per_task": per_task(drained.commits),
    }


if __name__ == "__main__":
    sys.exit(main())
