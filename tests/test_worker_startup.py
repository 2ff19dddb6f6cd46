"""``runworker``'s checks before it starts: it refuses to start when a tasks
module sends at import time or the settings are wrong, and ignores the web
side's checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from django_tasks_q.models import Task, Worker
from tests.conftest import REPO_DIR
from tests.helpers import RunWorker
from tests.taskapp.tasks.api import add

pytestmark = pytest.mark.django_db(transaction=True)

BAD_SETTINGS = "tests.settings_badapp"


def run_check(worker_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py check`` with the workers' environment."""
    return subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=worker_env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


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

    process = run_check(worker_env)

    assert process.returncode == 1
    assert "django_tasks_q.E003" in process.stderr
    assert "Tasks module 'tests.badapp.tasks' sends a task" in process.stderr
    assert "Move the .send() call into a function" in process.stderr
    assert not Task.objects.exists()


def test_check_passes_without_sends_on_import(worker_env: dict[str, str]) -> None:
    process = run_check(worker_env)

    assert process.returncode == 0, process.stderr
    assert "django_tasks_q.E003" not in process.stderr


def settings_module(worker_env: dict[str, str], directory: Path, body: str) -> None:
    """Run the workers of ``worker_env`` with the test settings plus ``body``."""
    (directory / "altered_settings.py").write_text(
        f"from tests.settings import *  # noqa: F403\n{body}\n"
    )
    worker_env["PYTHONPATH"] = f"{directory}{os.pathsep}{worker_env['PYTHONPATH']}"
    worker_env["DJANGO_SETTINGS_MODULE"] = "altered_settings"


def test_worker_refuses_to_start_when_its_own_checks_fail(
    run_worker: RunWorker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    settings_module(worker_env, tmp_path, 'TASKS_Q = {"POLL_INTERVALL": 1}')

    process = run_worker("--burst", timeout=30)

    assert process.returncode == 1
    assert "django_tasks_q.E001" in process.stderr
    assert not Worker.objects.exists()


def test_worker_skips_the_checks_of_the_web_side(
    run_worker: RunWorker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Importing the URLconf, as the URL checks do, would fail.
    settings_module(worker_env, tmp_path, 'ROOT_URLCONF = "tests.no_such_urls"')
    check = run_check(worker_env)
    handle = add.send(2, 3)

    process = run_worker("--burst", timeout=30)

    assert check.returncode == 1
    assert "tests.no_such_urls" in check.stderr
    assert process.returncode == 0, process.stderr
    assert handle.get(timeout_ms=0).ok == 5
