"""Helpers for tests that drive real worker processes."""

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raise ``AssertionError`` when ``timeout`` seconds pass first; ``message``
    says what was awaited.
    """
    deadline = time.monotonic() + timeout

    while True:
        value = predicate()
        if value:
            return value

        # Check once more after the deadline rather than giving up while
        # asleep: a slow machine should not fail a condition met late.
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)

    what = message or getattr(predicate, "__qualname__", repr(predicate))
    raise AssertionError(
        f"Timed out after {timeout} s waiting for {what}; last value: {value!r}."
    )


class WorkerProcess:
    """A ``runworker`` process started by the ``start_worker`` fixture."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def output(self) -> str:
        """Return what the worker wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send_signal(self, sig: signal.Signals | int) -> None:
        """Send ``sig`` to the worker process itself."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit and return its exit code.

        Raise ``subprocess.TimeoutExpired`` if it still runs after
        ``timeout`` seconds.
        """
        return self.process.wait(timeout)


class RunWorker(Protocol):
    """Type of the ``run_worker`` fixture."""

    def __call__(
        self, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


class StartWorker(Protocol):
    """Type of the ``start_worker`` fixture."""

    def __call__(self, *args: str) -> WorkerProcess: ...
