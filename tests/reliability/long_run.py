"""Run the chaos suite's long tier and summarize it.

Usage: ``python tests/reliability/long_run.py --minutes 10 [--summary PATH]``.

The database is the test suite's: PostgreSQL when ``DATABASE_URL`` is set,
SQLite otherwise. The fault-injecting load of scenario 2 runs for the given
minutes, and on SQLite so does the steady sender of scenario 8, one after
the other. The summary is printed as a table and written as JSON; the exit
code is not 0 when any invariant failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parents[2]

SCENARIOS = [
    "tests/reliability/test_faults.py",
    # Skips itself on PostgreSQL.
    "tests/reliability/test_sqlite_load.py",
]

# Dedicated test databases, so that the long run never drops the tables of
# a test suite running beside it; the caller's own choice wins.
DEFAULT_TEST_DATABASES = {
    "TASKS_Q_PG_TEST_NAME": "test_tasksq_chaos_long",
    "TASKS_Q_SQLITE_TEST_PATH": str(REPO_DIR / ".test-db" / "chaos-long.sqlite3"),
}


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    database = "postgresql" if os.environ.get("DATABASE_URL") else "sqlite"

    with tempfile.TemporaryDirectory() as scratch:
        records_path = Path(scratch) / "summaries.jsonl"
        exit_code = _run_pytest(options.minutes, records_path, options.pytest_args)
        records = _read_records(records_path)

    summary = _summarize(database, options.minutes, exit_code, records)
    print(_table(summary))
    options.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nSummary written to {options.summary}.")
    return 0 if summary["passed"] else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Run the chaos suite's long tier on the test suite's database "
            "(PostgreSQL with DATABASE_URL, else SQLite): scenario 2's "
            "fault-injecting load, then on SQLite scenario 8's steady sender, "
            "each for MINUTES. Print a summary; exit 1 if an invariant failed."
        ),
        epilog=(
            "Set TASKS_Q_PG_TEST_NAME or TASKS_Q_SQLITE_TEST_PATH to choose the "
            "test database (default: test_tasksq_chaos_long, "
            ".test-db/chaos-long.sqlite3). Arguments after -- go to pytest."
        ),
    )
    parser.add_argument(
        "--minutes",
        type=float,
        required=True,
        help="How long each load scenario runs.",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=Path(".chaos-summary.json"),
        help="Where to write the summary as JSON. Default: .chaos-summary.json.",
    )
    parser.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.minutes <= 0:
        parser.error(f"--minutes must be more than 0, not {options.minutes:g}")
    return options


def _run_pytest(minutes: float, records_path: Path, extra: list[str]) -> int:
    env = os.environ.copy()
    for name, value in DEFAULT_TEST_DATABASES.items():
        env.setdefault(name, value)
    env["TASKS_Q_CHAOS_MINUTES"] = str(minutes)
    env["TASKS_Q_CHAOS_SUMMARY"] = str(records_path)

    command = [sys.executable, "-m", "pytest", "-q", *SCENARIOS, *extra]
    return subprocess.run(command, env=env, cwd=REPO_DIR, check=False).returncode


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _summarize(
    database: str, minutes: float, exit_code: int, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Judge the run: pytest passed, and each scenario reported nothing lost,
    every duplicate explained, and no violation."""
    sound = all(
        record["lost"] == 0
        and record["explained"] == record["duplicates"]
        and not record["violations"]
        for record in records
    )
    return {
        "database": database,
        "minutes": minutes,
        "pytest_exit_code": exit_code,
        "passed": exit_code == 0 and bool(records) and sound,
        "scenarios": records,
    }


def _table(summary: dict[str, Any]) -> str:
    rows = [
        f"Chaos long run on {summary['database']}, {summary['minutes']:g} "
        f"minute(s) per scenario: {'PASSED' if summary['passed'] else 'FAILED'} "
        f"(pytest exit code {summary['pytest_exit_code']})",
    ]
    if not summary["scenarios"]:
        rows.append("No scenario reported a summary.")

    for record in summary["scenarios"]:
        latency = record["rescue_latency_max"]
        facts = [
            ("tasks", record["tasks"]),
            ("executions", record["executions"]),
            ("faults injected", _counts(record["faults"])),
            (
                "duplicate executions",
                f"{record['duplicates']} ({record['explained']} explained)",
            ),
            ("overlaps after SIGSTOP or killed connections", record["overlaps"]),
            (
                "max rescue latency after SIGKILL",
                "-" if latency is None else f"{latency:.2f} s",
            ),
            ("late writes fenced out", _counts(record["fenced_out"])),
            ("lost", record["lost"]),
            ("invariant violations", len(record["violations"])),
            *sorted(
                (f"note: {key}", value)
                for key, value in record["notes"].items()
                if value not in ({}, None)
            ),
        ]
        rows.append("")
        rows.append(f"Scenario {record['scenario']}")
        rows.extend(f"  {name:<46} {value}" for name, value in facts)
        rows.extend(f"  ! {violation}" for violation in record["violations"][:20])
    return "\n".join(rows)


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "0"
    parts = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return f"{sum(counts.values())} ({parts})"


if __name__ == "__main__":
    sys.exit(main())
