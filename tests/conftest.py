"""Fixtures that run real ``runworker`` processes against the test database."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.db import connection

from django_tasks_q import notifications
from tests.helpers import RunWorker, StartWorker, WorkerProcess

REPO_DIR = Path(__file__).resolve().parent.parent

# Seconds a worker gets to drain after SIGTERM at teardown before SIGKILL.
TERMINATE_GRACE = 10.0


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"database: {connection.vendor}, Django: {django.get_version()}"]


def pytest_sessionstart(session: pytest.Session) -> None:
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return
    if session.config.getoption("reuse_db", default=False):
        return

    # Django deletes an old SQLite test database but not its WAL and shared
    # memory files, which a killed run leaves behind; SQLite would replay
    # that stale WAL into the new database and corrupt it.
    test_path = database["TEST"]["NAME"]
    for suffix in ("-wal", "-shm"):
        Path(f"{test_path}{suffix}").unlink(missing_ok=True)


@pytest.fixture(scope="session", autouse=True)
def release_test_database(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[None]:
    """Close what still uses the PostgreSQL test database before it is
    dropped: the result waiters' listening connection, and connections left
    in threads that ``get_async()`` ran queries on (asgiref's executor)."""
    yield
    notifications.close_result_listeners()
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def worker_env(transactional_db: None) -> dict[str, str]:
    """Return the environment for a worker subprocess on the test database.

    A worker is another process and sees only committed rows, so a test that
    uses this fixture, or ``run_worker`` or ``start_worker``, needs a
    transactional database: mark it
    ``@pytest.mark.django_db(transaction=True)``. The fixture requests
    ``transactional_db`` itself, so forgetting the mark cannot leave a worker
    waiting for rows that a test transaction hides from it.
    """
    env = os.environ.copy()

    python_path = [str(REPO_DIR), str(REPO_DIR / "testproject")]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])

    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join(python_path),
        # The settings read this name, so the worker opens the database that
        # pytest-django created instead of the development one.
        TASKS_Q_DB_NAME=str(connection.settings_dict["NAME"]),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def run_worker(worker_env: dict[str, str]) -> RunWorker:
    """Return a function that runs ``runworker`` with the given arguments.

    The function waits for the process to exit and returns its
    ``CompletedProcess`` with text output, or fails the test after
    ``timeout`` seconds. Pass ``--burst`` for a worker that stops once the
    queue is empty. Like every worker fixture, it needs
    ``@pytest.mark.django_db(transaction=True)`` (see ``worker_env``).
    """

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "django", "runworker", *args]

        try:
            return subprocess.run(
                command,
                env=worker_env,
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            pytest.fail(
                f"runworker {' '.join(args)} still ran after {timeout} s.\n"
                f"stdout:\n{_text(error.stdout)}\nstderr:\n{_text(error.stderr)}"
            )

    return run


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    """Return a function that starts a long-running ``runworker`` process.

    The function returns a ``WorkerProcess`` at once, without waiting for the
    worker to be ready. Its output goes to a log file, so a chatty worker
    never blocks on a full pipe. At teardown every worker still running gets
    SIGTERM, then SIGKILL after ``TERMINATE_GRACE`` seconds. Like every worker
    fixture, it needs ``@pytest.mark.django_db(transaction=True)`` (see
    ``worker_env``).
    """
    workers: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(workers) + 1}.log"

        # The child keeps its own copy of the descriptor, so the file can be
        # closed here as soon as the process has started.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "django", "runworker", *args],
                env=worker_env,
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Keeps a Ctrl-C in the terminal from reaching the workers
                # twice, and gives each worker a group to kill at teardown.
                start_new_session=True,
            )

        worker = WorkerProcess(process, log_path)
        workers.append(worker)
        return worker

    yield start

    _stop([worker.process for worker in workers])


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired holds text in text mode, though it is typed as bytes.
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()

    deadline = time.monotonic() + TERMINATE_GRACE
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # Kill the whole group while the unreaped worker still holds its
            # id, so no child of it keeps a connection to the test database.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
