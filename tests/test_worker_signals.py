"""A long-running ``runworker`` stopped with real signals, and live progress."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from django_tasks_q import TaskHandle, TaskInfo, TaskStatus
from django_tasks_q.models import Task, Worker
from django_tasks_q.worker.stop_signals import SignalRelay
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks.worker import multiply, report_progress, sleep_for

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(handle: TaskHandle[Any]) -> str:
    return Task.objects.get(pk=handle.task_id).status


def start_when_running(
    start_worker: StartWorker, handle: TaskHandle[Any]
) -> WorkerProcess:
    """Start a one-slot worker and wait until it runs ``handle``'s task."""
    worker = start_worker("--concurrency", "1", "--poll-interval", "0.1")
    wait_until(
        lambda: status_of(handle) == TaskStatus.RUNNING,
        timeout=30,
        message=f"task {handle.task_id} to run",
    )
    return worker


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_worker_signal_lets_running_task_finish(
    start_worker: StartWorker, stop_signal: signal.Signals
) -> None:
    running = sleep_for.send(1.5)
    queued = multiply.using(priority=-1).send(2, 3)
    worker = start_when_running(start_worker, running)

    worker.send_signal(stop_signal)
    exit_code = worker.wait(timeout=20)

    output = worker.output()
    assert exit_code == 0, output
    assert f"received {stop_signal.name}" in output
    assert running.get(timeout_ms=0).ok == "slept 1.5"
    # Claiming stopped at the signal: the next task was never taken.
    queued_row = Task.objects.get(pk=queued.task_id)
    assert (queued_row.status, queued_row.attempts) == (TaskStatus.PENDING, 0)
    assert Worker.objects.get().stopped_at is not None


def test_worker_second_signal_exits_at_once(start_worker: StartWorker) -> None:
    running = sleep_for.send(30)
    worker = start_when_running(start_worker, running)
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: "received SIGTERM" in worker.output(), timeout=10)

    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    exit_code = worker.wait(timeout=5)

    assert exit_code != 0
    assert time.monotonic() - started < 5
    assert status_of(running) == TaskStatus.RUNNING


def test_worker_drain_stops_waiting_after_drain_timeout(
    start_worker: StartWorker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "drain_settings.py").write_text(
        'from tests.settings import *  # noqa: F403\nTASKS_Q = {"DRAIN_TIMEOUT": 1.0}\n'
    )
    worker_env["PYTHONPATH"] = f"{tmp_path}:{worker_env['PYTHONPATH']}"
    worker_env["DJANGO_SETTINGS_MODULE"] = "drain_settings"
    running = sleep_for.send(8)
    worker = start_when_running(start_worker, running)

    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(
            "The worker still waited for its task 5 s after SIGTERM, though "
            "TASKS_Q['DRAIN_TIMEOUT'] is 1 s."
        )

    assert time.monotonic() - started < 5
    assert status_of(running) != TaskStatus.COMPLETED


def test_worker_progress_is_visible_while_task_runs(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    handle = report_progress.send(str(release))
    start_worker("--poll-interval", "0.1")

    def stored_progress() -> TaskInfo | None:
        info = handle.info()
        return info if info is not None and info.progress else None

    info = wait_until(stored_progress, timeout=30, message="progress to be stored")
    release.touch()
    result = handle.get(timeout_ms=20_000)

    assert info is not None
    assert info.status == TaskStatus.RUNNING
    assert info.progress == {"done": 1, "total": 3, "message": "first step done"}
    assert result.ok == "released"
    finished = handle.info()
    assert finished is not None
    assert finished.progress == {"done": 3, "total": 3, "message": "all done"}


def test_a_signal_is_reacted_to_after_a_lock_held_by_the_main_thread_is_freed() -> None:
    # A reaction run inside the handler would run in the main thread while it
    # holds the lock, and time out on it: the claim loop's threading.Event
    # would deadlock the worker that way.
    lock = threading.Lock()
    reactions: queue.Queue[tuple[int, bool, bool]] = queue.Queue()

    def react(signum: int) -> None:
        on_main_thread = threading.current_thread() is threading.main_thread()
        reactions.put((signum, on_main_thread, lock.acquire(timeout=2)))

    relay = SignalRelay(react, [signal.SIGUSR1])
    relay.install()
    try:
        with lock:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.3)
        reaction = reactions.get(timeout=5)
    finally:
        relay.uninstall()

    assert reaction == (signal.SIGUSR1, False, True)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
