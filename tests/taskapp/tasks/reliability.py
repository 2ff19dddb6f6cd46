"""Tasks used by the tests of worker reliability: rescue, timeouts,
cancellation and the prefork pool."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from pathlib import Path

from django_tasks_q import RetryPolicy, current_task, task


@task
def hold(seconds: float) -> int:
    """Run for ``seconds``, then return the pid of the worker that ran it."""
    time.sleep(seconds)
    return os.getpid()


@task
def kill_my_worker() -> None:
    """Kill the whole worker process, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


# Timeouts, cancellation and pools: tests/test_worker_timeouts.py,
# tests/test_worker_cancel.py and tests/test_worker_prefork.py.


@task(timeout=0.5)
def overrun(seconds: float) -> int:
    """Sleep past the 0.5 s timeout, ignoring every request to stop."""
    time.sleep(seconds)
    return os.getpid()


@task(timeout=0.5, retry_policy=RetryPolicy.fixed(0.1, max_retries=1))
def overrun_twice(seconds: float) -> None:
    time.sleep(seconds)


@task(timeout=0.5)
async def overrun_async(seconds: float, marker: str) -> None:
    """Sleep past the timeout; note in ``marker``'s file that it was cancelled."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(marker).write_text("cancelled")
        raise


@task(timeout=5)
def within_timeout() -> int:
    return os.getpid()


@task
def stop_when_cancelled(seconds: float) -> str:
    """Work in small steps, stopping as soon as a cancel is requested."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current_task().raise_if_cancelled()
        time.sleep(0.05)
    return "finished"


@task
def ignore_cancel(seconds: float) -> str:
    """Never check for a cancel request."""
    time.sleep(seconds)
    return "finished"


@task
async def hold_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@task
def child_pid() -> int:
    return os.getpid()


@task
async def child_pid_async() -> int:
    return os.getpid()


@task
def exit_process() -> None:
    """End the process at once, skipping every clean-up, as os._exit does."""
    os._exit(3)


@task
def segfault() -> None:
    """Crash the interpreter by reading address 0."""
    ctypes.string_at(0)


@task(timeout=1)
def never_ends() -> None:
    while True:
        time.sleep(0.1)
