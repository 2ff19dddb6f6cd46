"""Settings of the test suite: the demo project plus the tests' own app."""

import faulthandler
import json
import os
import signal
import sys
from pathlib import Path

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES, INSTALLED_APPS

REPO_DIR = Path(__file__).resolve().parent.parent

INSTALLED_APPS = [*INSTALLED_APPS, "tests.taskapp"]

# Workers started by the tests write every thread's stack to their log on
# SIGUSR2: tests.helpers.WorkerProcess.wait() shows where a worker that fails
# to exit hangs.
faulthandler.register(signal.SIGUSR2, all_threads=True)

# Each Python version gets its own test database, so that two tox
# environments running at once never drop each other's tables.
_python = sys.version_info

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Worker subprocesses cannot open an in-memory database, so the test
    # database has to be a file.
    _test_path = os.environ.get("TASKS_Q_SQLITE_TEST_PATH") or (
        REPO_DIR / ".test-db" / f"test-{_python.major}.{_python.minor}.sqlite3"
    )
    Path(_test_path).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(_test_path)}
else:
    # TASKS_Q_PG_TEST_NAME lets a second suite share the server unharmed.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("TASKS_Q_PG_TEST_NAME")
        or f"test_tasksq_py{_python.major}{_python.minor}"
    }

# Worker subprocesses of the reliability tests run with compressed timings,
# passed as JSON, e.g. {"HEARTBEAT_INTERVAL": 0.2, "DEAD_WORKER_AFTER": 1}.
TASKS_Q = json.loads(os.environ.get("TASKS_Q_TEST_SETTINGS") or "{}")
