"""Helpers for tests that drive real worker processes."""

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

#: Registered with faulthandler by tests/settings.py; not imported from there,
#: since this module must load before Django's settings.
DUMP_STACKS_SIGNAL = signal.SIGUSR2


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
        ``timeout`` seconds, noting the end of its log and the stacks of its
        threads: a failure must say where the worker hangs.
        """
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as timed_out:
            timed_out.add_note(self._stacks_and_log_tail())
            raise

    def _stacks_and_log_tail(self, lines: int = 80) -> str:
        # The worker's test settings register DUMP_STACKS_SIGNAL.
        self.send_signal(DUMP_STACKS_SIGNAL)
        time.sleep(0.5)
        tail = "\n".join(self.output().splitlines()[-lines:])
        return f"The last {lines} lines of {self.log_path.name}, stacks last:\n{tail}"


class RunWorker(Protocol):
    """Type of the ``run_worker`` fixture."""

    def __call__(
        self, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


class StartWorker(Protocol):
    """Type of the ``start_worker`` fixture."""

    def __call__(self, *args: str) -> WorkerProcess: ...
