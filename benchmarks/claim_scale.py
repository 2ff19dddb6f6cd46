"""Claim latency on a big task table: 1,000,000 pending, 5,000,000 finished.

Usage::

    DATABASE_URL=postgres://... python -m benchmarks.claim_scale \\
        [--pending 1000000] [--finished 5000000] [--claims 300] [--json]

Try it small first (``--pending 10000 --finished 50000``): the full fill
writes about 2 GB and takes minutes.

Steps, in a fresh ``bench_claim_scale_*`` database migrated with
``benchmarks/settings.py``:

1. Fill ``django_tasks_q_task`` with ``INSERT ... SELECT generate_series``:
   first the finished rows (``COMPLETED``, as a worker leaves them), then
   the pending ones, due in the past, one millisecond apart. Ids are
   time-ordered like the real UUIDv7 ids. The secondary indexes are dropped
   for the fill and created again from their own definitions afterwards
   (faster than maintaining them row by row; the end state is the same),
   then ``VACUUM ANALYZE`` leaves the table as autovacuum would.
2. Register a ``Worker`` row and call the real
   ``django_tasks_q.claims.claim(worker_id=..., queues=["default"], limit=4,
   database="default")``: a few untimed warm-up claims, then ``--claims``
   timed ones (each really claims 4 tasks and commits).
3. Print p50/p95/p99/max, and ``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL
   ``claim()`` sends, captured while it runs, so the plan follows the code
   (it is run in a transaction that is rolled back).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import fresh_postgres_database, percentiles
from benchmarks.tasksq import configure

TABLE = "django_tasks_q_task"
WORKER_ID = "bench-claim-scale"
TASK_NAME = "benchmarks.benchapp.tasks.noop"

#: A time-ordered UUID (version 7 layout) for row number ``n``, made from a
#: millisecond timestamp ``%(base_ms)s + n``.
_UUID_SQL = (
    "(lpad(to_hex(%(base_ms)s::bigint + n), 12, '0') || '7'"
    " || lpad(to_hex(n %% 4096), 3, '0') || '8'"
    " || lpad(to_hex((n / 4096) %% 4096), 3, '0')"
    " || lpad(to_hex(n), 12, '0'))::uuid"
)

_FILL_SQL = f"""
INSERT INTO {TABLE} (
    id, name, queue, priority, status, args, kwargs, enqueued_at, run_after,
    good_until, attempts, max_attempts, crashes, timeout, worker_id,
    lease_token, claimed_at, started_at, finished_at, progress,
    cancel_requested_at, result, error_code, error_message, error_data,
    exception_type, traceback
)
SELECT
    {_UUID_SQL},
    '{TASK_NAME}', 'default', 0, %(status)s, '[]'::jsonb, '{{}}'::jsonb,
    stamp, stamp,
    NULL, %(attempts)s, 1, 0, NULL, %(worker)s,
    CASE WHEN %(finished)s THEN gen_random_uuid() END,
    CASE WHEN %(finished)s THEN stamp + interval '1 ms' END,
    CASE WHEN %(finished)s THEN stamp + interval '1 ms' END,
    CASE WHEN %(finished)s THEN stamp + interval '2 ms' END,
    NULL, NULL,
    CASE WHEN %(finished)s THEN 'null'::jsonb END,
    '', '', NULL, '', ''
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n,
    LATERAL (SELECT to_timestamp((%(base_ms)s::bigint + n) / 1000.0) AS stamp) AS t
"""


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    with fresh_postgres_database("claim_scale") as database:
        configure(database)
        fill_seconds = fill(options.pending, options.finished)
        timings, plans = time_claims(options.claims, options.warmup)

        from django.db import connections

        connections.close_all()

    figures = {k: 1000 * v for k, v in percentiles(timings).items()}
    report = {
        "pending": options.pending,
        "finished": options.finished,
        "claims": len(timings),
        "fill_seconds": fill_seconds,
        **{f"{k}_ms": v for k, v in figures.items()},
        "explain": "\n\n".join(plans),
    }
    if options.json:
        print(json.dumps(report))
        return 0

    print(
        f"{options.pending:,} pending + {options.finished:,} finished rows "
        f"(filled in {fill_seconds:.1f} s); {len(timings)} claims of 4:"
    )
    print("  " + ", ".join(f"{k} {v:.3f} ms" for k, v in figures.items()))
    print()
    print(report["explain"])
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.claim_scale",
        description="Claim latency with many pending and finished tasks.",
    )
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=5_000_000)
    parser.add_argument("--claims", type=int, default=300, help="Timed claims.")
    parser.add_argument("--warmup", type=int, default=20, help="Untimed claims.")
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    return parser.parse_args(argv)


def fill(pending: int, finished: int, *, chunk: int = 1_000_000) -> float:
    """Insert the rows; return the seconds it took, index builds included."""
    from django.db import connection

    began = time.monotonic()
    total = pending + finished
    base_ms = int(time.time() * 1000) - total - 60_000
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = %s AND indexname NOT LIKE %s",
            [TABLE, "%_pkey"],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

        for first in range(1, total + 1, chunk):
            last = min(first + chunk - 1, total)
            # Finished rows first (older), then pending ones (newer).
            for lo, hi, done in (
                (first, min(last, finished), True),
                (max(first, finished + 1), last, False),
            ):
                if lo > hi:
                    continue
                cursor.execute(
                    _FILL_SQL,
                    {
                        "base_ms": base_ms,
                        "first": lo,
                        "last": hi,
                        "finished": done,
                        "status": "COMPLETED" if done else "PENDING",
                        "attempts": 1 if done else 0,
                        "worker": "bench-old-worker" if done else "",
                    },
                )
            print(f"  {last:,} of {total:,} rows", file=sys.stderr)

        for _, definition in indexes:
            cursor.execute(definition)
    # VACUUM cannot run in a transaction: Django's connection autocommits.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")
    return time.monotonic() - began


def time_claims(count: int, warmup: int) -> tuple[list[float], list[str]]:
    """Seconds of each of ``count`` timed claims of 4, and the EXPLAIN
    (ANALYZE, BUFFERS) output of each statement one claim sends."""
    from django.db import connection

    from django_tasks_q.claims import claim
    from django_tasks_q.models import Worker

    Worker.objects.create(
        id=WORKER_ID,
        hostname=socket.gethostname(),
        pid=0,
        queues=["default"],
        concurrency=4,
    )

    def one() -> int:
        return len(
            claim(worker_id=WORKER_ID, queues=["default"], limit=4, database="default")
        )

    for _ in range(warmup):
        one()

    timings = []
    short = 0
    for _ in range(count):
        began = time.perf_counter()
        got = one()
        timings.append(time.perf_counter() - began)
        short += got < 4
    if short:
        print(f"warning: {short} claims got fewer than 4 tasks", file=sys.stderr)

    with _capture(connection) as statements:
        one()
    plans = []
    for sql, params in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE")):
            continue
        plans.append(_explain(sql, params))
    return timings, plans


@contextlib.contextmanager
def _capture(connection: Any) -> Iterator[list[tuple[str, Any]]]:
    """The (sql, params) pairs ``connection`` executes inside the block."""
    captured: list[tuple[str, Any]] = []

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield captured


def _explain(sql: str, params: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement, its effects rolled back."""
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            lines = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
