"""The throughput benchmark: django-tasks-q against its peers, in one command.

Usage::

    DATABASE_URL=postgres://user:password@127.0.0.1:5432/db \\
        python -m benchmarks.run [--rounds 3] [--tasks 10000] \\
        [--systems django-tasks-q procrastinate ...] \\
        [--database postgresql|sqlite|both] [--claim-scale] [--write-docs]

(or ``tox -e bench -- --rounds 3``). Each measurement runs in a subprocess
of its own (``python -m benchmarks.measure``) on a fresh database, so the
systems never share Django settings, tables or warm caches. Per round, and
per measurement, every system runs once, in an order rotated each round, so
a slow spell of the machine falls on all of them alike. The measurements:

1. send one at a time (``--send-one`` tasks, each its own commit), tasks/s;
2. bulk send (``--bulk`` rows with the system's bulk API), rows/s;
3. drain ``--tasks`` no-op tasks with 1 process of concurrency 4, then 8,
   2 processes of 4, and 4 processes of 4, tasks/s from the first task's
   start to the last one's finish; the 1 x 4 drain also gives the CPU per
   task of the worker processes and of PostgreSQL, and the statements
   (pg_stat_statements) and commits (pg_stat_database) per task, and the
   2 x 4 and 4 x 4 drains PostgreSQL's CPU per task; then, for
   django-tasks-q only, 1 process of 8 with batched completions
   (``COMPLETION_BATCH_WAIT``), with its CPU and commits per task;
4. pick-up latency with one idle worker (``--latency-tasks`` sends), and for
   django-tasks-q also finish-to-``get()``;
5. resident memory of one idle worker;
6. once per round, ``pgbench`` running a bare insert/claim/complete lifecycle
   with 1 and 4 clients: what the server itself allows
   (``benchmarks/pgbench_lifecycle.py``);
7. with ``--claim-scale``, once: django-tasks-q's claim latency with
   1,000,000 pending and 5,000,000 finished tasks
   (``benchmarks/claim_scale.py``, several minutes).

The table gives, per measurement, the median over the rounds with the
range (min-max), and the ratio django-tasks-q / peer; a second table checks
the targets. A system that is not installed or fails shows "n/a (reason)"
and the run goes on. ``--write-docs`` rewrites the results section of
``docs/benchmarks.md`` and draws ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO_DIR, python_path_environment, quantile
from benchmarks.report import (
    CHART,
    DOCS_PAGE,
    OURS,
    Results,
    draw_chart,
    header,
    report,
    shorten,
    write_docs,
)

#: Seconds one measurement subprocess may take before it counts as failed.
MEASURE_TIMEOUT = 1200


# What is run --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One ``benchmarks.measure`` invocation, made per system and round."""

    key: str
    measurement: str
    count_option: str
    processes: int = 1
    concurrency: int = 4
    #: ``TASKS_Q`` settings of a django-tasks-q configuration; a run with
    #: settings measures django-tasks-q only.
    settings: dict[str, Any] | None = None


#: The batched drain's ``COMPLETION_BATCH_WAIT``, in seconds.
BATCH_WAIT = 0.002

RUNS = [
    Run("send-one", "send-one", "send_one"),
    Run("send-bulk", "send-bulk", "bulk"),
    Run("drain-1x4", "drain", "tasks", 1, 4),
    Run("drain-1x8", "drain", "tasks", 1, 8),
    Run("drain-2x4", "drain", "tasks", 2, 4),
    Run("drain-4x4", "drain", "tasks", 4, 4),
    Run(
        "drain-1x8-batched",
        "drain",
        "tasks",
        1,
        8,
        settings={"COMPLETION_BATCH_WAIT": BATCH_WAIT},
    ),
    Run("latency", "latency", "latency_tasks"),
    Run("idle-rss", "idle-rss", "latency_tasks"),
]


# Running ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    if options.load:
        top, all_results = _load(options.load)
        print(top)
    else:
        databases = (
            ["postgresql", "sqlite"]
            if options.database == "both"
            else [options.database]
        )
        if "postgresql" in databases and not os.environ.get("DATABASE_URL"):
            print(
                "DATABASE_URL is not set: PostgreSQL cannot be measured.",
                file=sys.stderr,
            )
            return 2

        known, problem = _known_systems()
        if problem:
            _progress(f"peers unavailable: {problem}")
        top = header(options, "postgresql" in databases)
        print(top, flush=True)
        unknown = sorted(set(options.systems or []) - set(known))
        if unknown:
            print(
                f"Unknown system(s) {', '.join(unknown)}: choose from "
                f"{', '.join(known)}.",
                file=sys.stderr,
            )
            return 2
        systems = options.systems or known
        all_results = [run_all(options, db, systems) for db in databases]

    documents = [top, *(report(results) for results in all_results)]
    print("\n".join(documents[1:]))

    if options.save:
        _save(options.save, top, all_results)
    if options.write_docs:
        write_docs("\n".join(documents))
        draw_chart(all_results[0], CHART)
        _progress(f"wrote {DOCS_PAGE.relative_to(REPO_DIR)} and {CHART.name}")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Throughput benchmark of django-tasks-q and its peers.",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="Rounds over all systems (3)."
    )
    parser.add_argument(
        "--tasks", type=int, default=10_000, help="Tasks per drain (10,000)."
    )
    parser.add_argument(
        "--send-one", type=int, default=2_000, help="Single sends (2,000)."
    )
    parser.add_argument(
        "--bulk", type=int, default=20_000, help="Rows bulk-sent (20,000)."
    )
    parser.add_argument(
        "--latency-tasks", type=int, default=200, help="Latency sends (200)."
    )
    parser.add_argument(
        "--systems", nargs="+", metavar="SYSTEM", help="Default: all of them."
    )
    parser.add_argument(
        "--database", choices=("postgresql", "sqlite", "both"), default="postgresql"
    )
    parser.add_argument(
        "--claim-scale",
        action="store_true",
        help="Also time claims among 1M pending and 5M finished tasks (slow).",
    )
    parser.add_argument(
        "--claim-pending", type=int, default=1_000_000, help="(1,000,000)"
    )
    parser.add_argument(
        "--claim-finished", type=int, default=5_000_000, help="(5,000,000)"
    )
    parser.add_argument(
        "--pgbench-seconds", type=float, default=10.0, help="Per client count (10)."
    )
    parser.add_argument(
        "--no-pgbench", action="store_true", help="Skip the pgbench lifecycle."
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="Rewrite the results of docs/benchmarks.md and docs/benchmarks.png.",
    )
    parser.add_argument("--save", type=Path, help="Also save the raw results (JSON).")
    parser.add_argument(
        "--load",
        type=Path,
        help="Measure nothing: report the results a --save wrote (with --write-docs,"
        " put them in the docs).",
    )
    return parser.parse_args(argv)


def _known_systems() -> tuple[list[str], str | None]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", "--list"],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO_DIR,
    )
    try:
        listed = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return [OURS], completed.stderr.strip()[-300:] or "measure --list failed"
    return list(listed["systems"]), listed.get("peers_problem")


def run_all(options: argparse.Namespace, database: str, systems: list[str]) -> Results:
    results = Results(database, systems, options.rounds)
    for number in range(options.rounds):
        shift = number % len(systems)
        order = systems[shift:] + systems[:shift]
        _progress(f"round {number + 1}/{options.rounds} ({database}): {order}")
        for run in RUNS:
            for system in order:
                if run.settings is None or system == OURS:
                    _one(results, options, database, system, run)
        if database == "postgresql" and not options.no_pgbench:
            _pgbench(results, options)

    if options.claim_scale and database == "postgresql" and OURS in systems:
        _claim_scale(results, options)
    return results


def _one(
    results: Results, options: argparse.Namespace, database: str, system: str, run: Run
) -> None:
    count = getattr(options, run.count_option)
    command = [
        sys.executable,
        "-m",
        "benchmarks.measure",
        system,
        run.measurement,
        "--database",
        database,
        "--count",
        str(count),
        "--processes",
        str(run.processes),
        "--concurrency",
        str(run.concurrency),
    ]
    environment = _environment()
    if run.settings is not None:
        environment["TASKS_Q_BENCH"] = json.dumps(run.settings)
    began = time.monotonic()
    report = _subprocess_json(command, MEASURE_TIMEOUT, environment)
    took = time.monotonic() - began
    key = (system, run.key)
    if report.get("ok"):
        results.runs.setdefault(key, []).append(report["result"])
        _progress(
            f"  {run.key:<10} {system:<16} {_summary(report['result'])} ({took:.0f} s)"
        )
    else:
        error = str(report.get("error") or "failed")
        results.errors.setdefault(key, []).append(error)
        _progress(f"  {run.key:<10} {system:<16} FAILED: {shorten(error, 200)}")


def _subprocess_json(
    command: list[str], timeout: float, environment: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``command``; return the JSON object on the last line of its
    output, or ``{"ok": False, "error": ...}``."""
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment or _environment(),
            cwd=REPO_DIR,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(completed.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                break
            return parsed
    tail = completed.stderr.strip().splitlines()
    return {"ok": False, "error": tail[-1] if tail else f"exit {completed.returncode}"}


def _pgbench(results: Results, options: argparse.Namespace) -> None:
    from benchmarks.pgbench_lifecycle import run_lifecycle

    try:
        jobs = run_lifecycle([1, 4], seconds=options.pgbench_seconds)
    except Exception as exc:
        results.pgbench_errors.append(f"{type(exc).__name__}: {exc}")
        _progress(f"  pgbench    FAILED: {shorten(str(exc), 200)}")
        return
    for clients, per_second in jobs.items():
        results.pgbench.setdefault(clients, []).append(per_second)
    _progress("  pgbench    " + ", ".join(f"{c}: {v:,.0f}/s" for c, v in jobs.items()))


def _claim_scale(results: Results, options: argparse.Namespace) -> None:
    _progress(
        f"claim scale: {options.claim_pending:,} pending, "
        f"{options.claim_finished:,} finished (slow)"
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks.claim_scale",
        "--pending",
        str(options.claim_pending),
        "--finished",
        str(options.claim_finished),
        "--json",
    ]
    report = _subprocess_json(command, 4 * 3600)
    if "p95_ms" in report:
        results.claim_scale = report
        _progress(f"  claim p50 {report['p50_ms']:.3f} ms, p95 {report['p95_ms']:.3f}")
    else:
        results.claim_scale_error = str(report.get("error") or "failed")


def _environment() -> dict[str, str]:
    return {**os.environ, **python_path_environment()}


def _summary(result: dict[str, Any]) -> str:
    if "tasks_per_second" in result:
        return f"{result['tasks_per_second']:,.0f} tasks/s"
    if "per_second" in result:
        return f"{result['per_second']:,.0f}/s"
    if result.get("pickup"):
        return f"pick-up p50 {1000 * quantile(result['pickup'], 0.5):.2f} ms"
    if "mb" in result:
        return f"{result['mb']:.1f} MB"
    return "done"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _save(path: Path, top: str, all_results: list[Results]) -> None:
    """Write the header and every raw result, for ``--load`` to report."""
    data = {
        "header": top,
        "databases": [
            {
                "database": results.database,
                "systems": results.systems,
                "rounds": results.rounds,
                "runs": [[*key, value] for key, value in results.runs.items()],
                "errors": [[*key, value] for key, value in results.errors.items()],
                "pgbench": {str(k): v for k, v in results.pgbench.items()},
                "pgbench_errors": results.pgbench_errors,
                "claim_scale": results.claim_scale,
                "claim_scale_error": results.claim_scale_error,
            }
            for results in all_results
        ],
    }
    path.write_text(json.dumps(data, indent=1))


def _load(path: Path) -> tuple[str, list[Results]]:
    """The header and results that ``--save`` wrote to ``path``."""
    data = json.loads(path.read_text())
    all_results = []
    for saved in data["databases"]:
        results = Results(saved["database"], saved["systems"], saved["rounds"])
        results.runs = {(s, r): v for s, r, v in saved["runs"]}
        results.errors = {(s, r): v for s, r, v in saved["errors"]}
        results.pgbench = {int(k): v for k, v in saved["pgbench"].items()}
        results.pgbench_errors = saved["pgbench_errors"]
        results.claim_scale = saved["claim_scale"]
        results.claim_scale_error = saved["claim_scale_error"]
        all_results.append(results)
    return str(data["header"]), all_results


if __name__ == "__main__":
    sys.exit(main())
