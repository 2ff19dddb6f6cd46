"""The database's own limit: a bare job lifecycle driven by ``pgbench``.

Usage::

    DATABASE_URL=postgres://... python -m benchmarks.pgbench_lifecycle \\
        [--clients 1 4] [--seconds 10] [--json]

No Python and no queue library runs here: ``pgbench`` (the C client shipped
with PostgreSQL) replays ``pgbench_lifecycle.sql`` as fast as the server
allows, on a table of its own in a fresh ``bench_pgbench_*`` database. One
pgbench "transaction" is one job: INSERT it, claim the oldest pending job
with ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING``, and mark it completed; each statement commits on its own, as
a queue's worker would. Its transactions per second are thus jobs per
second, the ceiling for any queue that stores each job's steps as separate
commits on this server (with its ``fsync`` and ``synchronous_commit``).

The table is seeded with a backlog (``--backlog``, 1,000 jobs) so that a
claim never comes back empty while the other clients hold rows. pgbench
runs with prepared statements (``-M prepared``), its best case.
``benchmarks/run.py`` calls ``run_lifecycle()`` once per round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import connect, fresh_postgres_database

SCRIPT = Path(__file__).with_suffix(".sql")

_SCHEMA = """
CREATE TABLE bench_lifecycle_job (
    id bigserial PRIMARY KEY,
    status varchar(16) NOT NULL,
    payload jsonb NOT NULL,
    result jsonb,
    attempts integer NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX bench_lifecycle_pending ON bench_lifecycle_job (id)
    WHERE status = 'PENDING';
"""


def pgbench_binary() -> str:
    """``pgbench`` on PATH, else in ``pg_config --bindir``; raises
    ``FileNotFoundError`` if neither has it."""
    found = shutil.which("pgbench")
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        folder = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidate = Path(folder) / "pgbench"
        if candidate.exists():
            return str(candidate)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench")):
        return str(candidate)
    raise FileNotFoundError("pgbench is not on PATH nor in pg_config --bindir.")


def run_lifecycle(
    clients: list[int], *, seconds: float = 10.0, backlog: int = 1000
) -> dict[int, float]:
    """Jobs per second with each number of ``clients``, each run on a fresh
    table with a backlog of ``backlog`` pending jobs."""
    binary = pgbench_binary()
    results: dict[int, float] = {}
    with fresh_postgres_database("pgbench") as database:
        params = database.params
        environment = {
            **os.environ,
            "PGHOST": params["host"],
            "PGPORT": params["port"],
            "PGUSER": params["user"],
            "PGPASSWORD": params.get("password", ""),
            "PGDATABASE": params["dbname"],
        }
        for count in clients:
            with connect(database) as conn:
                conn.execute("DROP TABLE IF EXISTS bench_lifecycle_job")
                conn.execute(_SCHEMA)
                conn.execute(
                    "INSERT INTO bench_lifecycle_job (status, payload) "
                    "SELECT 'PENDING', '{}' FROM generate_series(1, %s)",
                    [backlog],
                )
                conn.execute("VACUUM ANALYZE bench_lifecycle_job")

            command = [
                binary,
                "--no-vacuum",
                "--protocol=prepared",
                f"--client={count}",
                f"--jobs={count}",
                f"--time={max(1, round(seconds))}",
                f"--file={SCRIPT}",
            ]
            completed = subprocess.run(
                command, env=environment, capture_output=True, text=True
            )
            if completed.returncode != 0:
                raise RuntimeError(
                    f"pgbench failed ({completed.returncode}): "
                    f"{completed.stderr.strip()[-500:]}"
                )
            results[count] = parse_tps(completed.stdout)
    return results


def parse_tps(output: str) -> float:
    """The ``tps = ...`` figure of pgbench's report."""
    match = re.search(r"^tps = ([0-9.]+)", output, re.MULTILINE)
    if not match:
        raise RuntimeError(f"No tps in pgbench's output: {output[-500:]!r}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pgbench_lifecycle",
        description="Jobs/s of a bare insert/claim/complete lifecycle (pgbench).",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    options = parser.parse_args(argv)

    results = run_lifecycle(
        options.clients, seconds=options.seconds, backlog=options.backlog
    )
    if options.json:
        print(json.dumps({str(count): tps for count, tps in results.items()}))
    else:
        for count, tps in results.items():
            print(f"{count} client(s): {tps:,.0f} jobs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
