"""Tasks used by tests/test_worker_rescue.py."""

from __future__ import annotations

import os
import signal
import time

from django_tasks_q import task


@task
def hold(seconds: float) -> int:
    """Run for ``seconds``, then return the pid of the worker that ran it."""
    time.sleep(seconds)
    return os.getpid()


@task
def kill_my_worker() -> None:
    """Kill the whole worker process, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)
