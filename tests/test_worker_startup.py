"""``runworker`` refuses to start when a tasks module sends at import time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from django_tasks_q.models import Task, Worker
from tests.conftest import REPO_DIR
from tests.helpers import RunWorker

pytestmark = pytest.mark.django_db(transaction=True)

BAD_SETTINGS = "tests.settings_badapp"


def test_worker_refuses_to_start_when_tasks_module_sends_on_import(
    run_worker: RunWorker, worker_env: dict[str, str]
) -> None:
    worker_env["DJANGO_SETTINGS_MODULE"] = BAD_SETTINGS

    process = run_worker("--burst", timeout=30)

    assert process.returncode == 1
    assert (
        "Tasks module 'tests.badapp.tasks' sends a task while it is imported"
        in process.stderr
    )
    assert "Traceback" not in process.stderr
    assert not Task.objects.exists()
    assert not Worker.objects.exists()


def test_check_reports_tasks_module_that_sends_on_import(
    worker_env: dict[str, str],
) -> None:
    worker_env["DJANGO_SETTINGS_MODULE"] = BAD_SETTINGS

    process = subprocess.run(
        [sys.executable, "testproject/manage.py", "check"],
        env=worker_env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert process.returncode == 1
    assert "django_tasks_q.E003" in process.stderr
    assert "Tasks module 'tests.badapp.tasks' sends a task" in process.stderr
    assert "Move the .send() call into a function" in process.stderr
    assert not Task.objects.exists()


def test_check_passes_without_sends_on_import(worker_env: dict[str, str]) -> None:
    process = subprocess.run(
        [sys.executable, "testproject/manage.py", "check"],
        env=worker_env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert process.returncode == 0, process.stderr
    assert "django_tasks_q.E003" not in process.stderr
