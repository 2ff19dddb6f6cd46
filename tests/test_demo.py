"""``manage.py demo`` end to end: a real worker on its own SQLite file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent

# The demo stops itself within a minute; this only catches a hang.
DEMO_TIMEOUT = 90

EXPECTED_RESULTS = {
    "welcome": "\"sent 'welcome' to user 42\"",
    "invoice": "Invoice(order_id=1001, total=Decimal('30.97'), lines=2,",
    "scheduled": "\"sent 'reminder' to user 7\"",
    "retried": "\"synced 'acme' on attempt 2\"",
    "declined": "error CARD_DECLINED: The card was declined for 1999 cents.",
    "progress": "250",
    "async": "'Example Domain (https://example.com)'",
}


def demo_env(sqlite_path: Path, **overrides: str) -> dict[str, str]:
    """Return an environment that points the demo at ``sqlite_path`` only."""
    env = os.environ.copy()

    # The demo is SQLite-only, whatever database the suite runs on, and must
    # never open the test database.
    for name in ("DATABASE_URL", "TASKS_Q_DB_NAME"):
        env.pop(name, None)

    python_path = [str(REPO_DIR)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])

    env.update(
        DJANGO_SETTINGS_MODULE="testproject.settings",
        TASKS_Q_SQLITE_PATH=str(sqlite_path),
        PYTHONPATH=os.pathsep.join(python_path),
        PYTHONUNBUFFERED="1",
        **overrides,
    )
    return env


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "testproject/manage.py", "demo"],
            cwd=REPO_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"manage.py demo still ran after {DEMO_TIMEOUT} s:\n{error}")


def result_lines(stdout: str) -> dict[str, str]:
    """Map each task label to its line in the demo's "Results:" section."""
    results = stdout.partition("\nResults:\n")[2]
    lines = {}
    for line in results.splitlines():
        verdict, _, rest = line.strip().partition("] ")
        if verdict in ("[ok  ", "[FAIL"):
            label, _, shown = rest.partition(" ")
            lines[label] = f"{verdict}] {shown.strip()}"
    return lines


def test_demo_runs_every_task_to_its_expected_end(tmp_path: Path) -> None:
    sqlite_path = tmp_path / "demo.sqlite3"

    completed = run_demo(demo_env(sqlite_path))

    output = f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert completed.returncode == 0, output

    lines = result_lines(completed.stdout)
    assert sorted(lines) == sorted(EXPECTED_RESULTS), output
    for label, shown in EXPECTED_RESULTS.items():
        assert lines[label].startswith(f"[ok  ] {shown}"), output
    assert "progress 5/5 imported batch 5" in completed.stdout, output
    assert "Worker exited with code 0." in completed.stdout, output
    assert "all as expected" in completed.stdout, output
    assert sqlite_path.exists()


def test_demo_refuses_a_database_other_than_sqlite(tmp_path: Path) -> None:
    # Nothing listens on port 1: the demo must stop before connecting.
    env = demo_env(
        tmp_path / "unused.sqlite3",
        DATABASE_URL="postgres://nobody@127.0.0.1:1/nowhere",
    )

    completed = run_demo(env)

    assert completed.returncode != 0
    assert "The demo runs on SQLite only" in completed.stderr, completed.stderr
    assert "unset DATABASE_URL" in completed.stderr, completed.stderr
