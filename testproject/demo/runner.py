"""The demo: start a real worker, send a mix of tasks, watch them, check them.

``manage.py demo`` only builds a ``DemoRunner`` and calls ``run()``, which
returns whether every task ended as expected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.db import connections

from django_tasks_q import TaskHandle, TaskInfo, TaskSendError, TaskStatus
from django_tasks_q.conf import get_settings
from django_tasks_q.models import Worker as WorkerRow

from .payloads import Address, Invoice, LineItem, Order
from .tasks import (
    charge_card,
    fetch_title,
    import_contacts,
    make_invoice,
    send_welcome,
    sync_crm,
)

#: The directory of manage.py, where the worker process starts.
PROJECT_DIR = Path(__file__).resolve().parent.parent

WORKER_COMMAND = [
    sys.executable,
    "manage.py",
    "runworker",
    "--poll-interval",
    "0.2",
    "--concurrency",
    "4",
]

# Time limits in seconds. Their sum stays well under a minute, so the demo
# ends on its own even when the worker hangs or never starts.
WORKER_START_TIMEOUT = 10.0
WATCH_TIMEOUT = 25.0
WATCH_INTERVAL = 0.3
GET_TIMEOUT_MS = 1000
WORKER_STOP_TIMEOUT = 10.0

ADMIN_HINT = """\
To look at these tasks in the admin:

    {manage} createsuperuser
    {manage} runserver --insecure

then open http://127.0.0.1:8000/admin/django_tasks_q/task/
(--insecure serves the admin's CSS while DEBUG is off, as in these settings)."""

Write = Callable[[str], None]


class DemoError(Exception):
    """The demo cannot run at all, for example on a database other than SQLite."""


@dataclass(frozen=True)
class Expected:
    """How one demo task should end: a value, or an error code."""

    value: Any = None
    error_code: str | None = None
    attempts: int = 1

    def describe(self) -> str:
        if self.error_code is not None:
            return f"error {self.error_code}"
        return repr(self.value)


@dataclass(frozen=True)
class DemoCase:
    """One task the demo sends, and what it should come back with."""

    label: str
    send: Callable[[], TaskHandle[Any]]
    expected: Expected


@dataclass
class SentCase:
    case: DemoCase
    handle: TaskHandle[Any]
    last_line: str = ""


def demo_cases() -> list[DemoCase]:
    """Return the tasks to send, in the order they are sent."""
    order = Order(
        order_id=1001,
        customer="Ada Lovelace",
        items=[
            LineItem(sku="BOOK-1", quantity=2, unit_price=Decimal("12.50")),
            LineItem(sku="PEN-7", quantity=3, unit_price=Decimal("1.99")),
        ],
    )
    address = Address(street="12 Analytical St", city="London", country="UK")
    invoice = Invoice(
        order_id=1001,
        total=Decimal("30.97"),
        lines=2,
        ship_label="Ada Lovelace, 12 Analytical St, London, UK",
    )

    return [
        DemoCase(
            "welcome",
            lambda: send_welcome.send(42),
            Expected(value="sent 'welcome' to user 42"),
        ),
        DemoCase(
            "invoice",
            lambda: make_invoice.send(order, address),
            Expected(value=invoice),
        ),
        DemoCase(
            "scheduled",
            lambda: send_welcome.schedule(3, 7, template="reminder"),
            Expected(value="sent 'reminder' to user 7"),
        ),
        DemoCase(
            "retried",
            lambda: sync_crm.send("acme"),
            Expected(value="synced 'acme' on attempt 2", attempts=2),
        ),
        DemoCase(
            "declined",
            lambda: charge_card.send(1999),
            Expected(error_code="CARD_DECLINED"),
        ),
        DemoCase(
            "progress",
            lambda: import_contacts.send(250),
            Expected(value=250),
        ),
        DemoCase(
            "async",
            lambda: fetch_title.send("https://example.com"),
            Expected(value="Example Domain (https://example.com)"),
        ),
    ]


class DemoRunner:
    """Runs the demo against the SQLite database of the current settings."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.database = get_settings().database
        self.started = time.monotonic()
        self.worker: subprocess.Popen[bytes] | None = None
        # Beside the database file, so that whatever ignores the one (such as
        # .gitignore) ignores the other.
        database_path = Path(connections[self.database].settings_dict["NAME"])
        self.log_path = database_path.with_name(f"{database_path.name}.worker.log")

    def run(self) -> bool:
        """Run the whole demo; return whether every task ended as expected."""
        self._check_database()
        self._migrate()

        try:
            self._start_worker()
            sent = self._send(demo_cases())
            self._watch(sent)
            all_expected = self._report(sent)
        finally:
            worker_ok = self._stop_worker()

        self.write("")
        self.write(ADMIN_HINT.format(manage=_manage_command()))
        self.write("")
        if all_expected and worker_ok:
            self.write(f"Demo finished in {self._elapsed():.1f} s: all as expected.")
            return True
        self.write(f"Demo FAILED after {self._elapsed():.1f} s; see above.")
        return False

    # Steps

    def _check_database(self) -> None:
        vendor = connections[self.database].vendor
        if vendor != "sqlite":
            raise DemoError(
                f"The demo runs on SQLite only, and database {self.database!r} "
                f"is {vendor}; unset DATABASE_URL and run it again."
            )

    def _migrate(self) -> None:
        name = connections[self.database].settings_dict["NAME"]
        self.write(f"Database: {name}")
        call_command("migrate", database=self.database, interactive=False, verbosity=0)
        self.write("Migrations applied.")

    def _start_worker(self) -> None:
        known_workers = set(self._worker_ids())
        env = os.environ.copy()
        # The worker must load the same settings, and so the same database
        # file, even when they were chosen with --settings.
        env["DJANGO_SETTINGS_MODULE"] = settings.SETTINGS_MODULE
        env["PYTHONUNBUFFERED"] = "1"

        # A file, not a pipe: nobody reads the worker's output while it runs,
        # and a full pipe would block it.
        with self.log_path.open("wb") as log:
            self.worker = subprocess.Popen(
                WORKER_COMMAND,
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C then reaches only the demo, which stops the worker
                # with one SIGTERM in _stop_worker().
                start_new_session=True,
            )
        self.write(f"Worker started: pid {self.worker.pid}, log {self.log_path}")

        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                self._show_worker_log()
                raise DemoError(
                    f"The worker exited with code {self.worker.returncode} "
                    "before it was ready."
                )
            new_workers = set(self._worker_ids(pid=self.worker.pid)) - known_workers
            if new_workers:
                self.write(f"Worker ready: id {new_workers.pop()}")
                return
            time.sleep(0.1)

        self._show_worker_log()
        raise DemoError(
            f"The worker did not register within {WORKER_START_TIMEOUT:.0f} s."
        )

    def _send(self, cases: list[DemoCase]) -> list[SentCase]:
        self.write("")
        self.write("Sending tasks:")
        sent = []
        for case in cases:
            try:
                handle = case.send()
            except TaskSendError as exc:
                raise DemoError(
                    f"Sending the {case.label} task failed with {exc.code}: "
                    f"{exc.message}"
                ) from exc
            sent.append(SentCase(case, handle))
            self.write(f"  {case.label:<10} {handle.task_id}")
        return sent

    def _watch(self, sent: list[SentCase]) -> None:
        """Print a task's status line whenever it changes, until all finish."""
        self.write("")
        self.write("Watching (a line whenever a task changes):")
        deadline = time.monotonic() + WATCH_TIMEOUT

        while True:
            unfinished = [item for item in sent if not self._show_change(item)]
            if not unfinished:
                return
            if self.worker is not None and self.worker.poll() is not None:
                self.write(f"The worker exited with code {self.worker.returncode}.")
                self._show_worker_log()
                return
            if time.monotonic() >= deadline:
                self.write(
                    f"{len(unfinished)} task(s) still unfinished after "
                    f"{WATCH_TIMEOUT:.0f} s."
                )
                return
            time.sleep(WATCH_INTERVAL)

    def _show_change(self, item: SentCase) -> bool:
        """Print the task's status line if it changed; return whether it ended."""
        info = item.handle.info(include_failed_reason=True)

        line = _status_line(info)
        if line != item.last_line:
            item.last_line = line
            self.write(f"  {self._elapsed():5.1f}s  {item.case.label:<10} {line}")

        return info is not None and info.status in TaskStatus.finished()

    def _report(self, sent: list[SentCase]) -> bool:
        """Print each task's result or error code; return whether all match."""
        self.write("")
        self.write("Results:")
        all_expected = True

        # A dead worker finishes nothing more: look once instead of waiting.
        worker_alive = self.worker is not None and self.worker.poll() is None
        timeout_ms = GET_TIMEOUT_MS if worker_alive else 0

        for item in sent:
            result = item.handle.get(timeout_ms=timeout_ms)
            info = item.handle.info()
            attempts = info.attempts if info is not None else 0
            expected = item.case.expected

            if result.is_ok():
                shown = repr(result.ok)
                matches = expected.error_code is None and result.ok == expected.value
            else:
                assert result.err is not None  # Set whenever not ok.
                shown = f"error {result.err.error_code}: {result.err.message}"
                matches = result.err.error_code == expected.error_code
            matches = matches and attempts == expected.attempts

            verdict = "ok  " if matches else "FAIL"
            self.write(f"  [{verdict}] {item.case.label:<10} {shown}")
            self.write(f"         {'':<10} attempts: {attempts}{_timing(info)}")
            if not matches:
                self.write(
                    f"         {'':<10} expected {expected.describe()} "
                    f"after {expected.attempts} attempt(s)"
                )
                all_expected = False

        return all_expected

    def _stop_worker(self) -> bool:
        """Stop the worker with SIGTERM; return whether it exited cleanly."""
        if self.worker is None:
            return False

        if self.worker.poll() is None:
            self.write("")
            self.write("Stopping the worker with SIGTERM...")
            self.worker.send_signal(signal.SIGTERM)
        try:
            code = self.worker.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()
            self.write(
                f"The worker still ran {WORKER_STOP_TIMEOUT:.0f} s after SIGTERM; "
                "killed it."
            )
            self._show_worker_log()
            return False

        self.write(f"Worker exited with code {code}.")
        return code == 0

    # Helpers

    def _worker_ids(self, pid: int | None = None) -> list[str]:
        rows = WorkerRow.objects.using(self.database)
        if pid is not None:
            rows = rows.filter(pid=pid, stopped_at__isnull=True)
        return list(rows.values_list("id", flat=True))

    def _show_worker_log(self, lines: int = 20) -> None:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.write(f"Last lines of {self.log_path}:")
        for line in text.splitlines()[-lines:]:
            self.write(f"  | {line}")

    def _elapsed(self) -> float:
        return time.monotonic() - self.started


def _manage_command() -> str:
    """Return how to call manage.py from here, with the Python running now."""
    python = os.path.relpath(sys.executable)
    if python.startswith(os.pardir):
        # Outside the current directory, such as an activated virtualenv,
        # where "python" is the same interpreter.
        python = "python"
    return f"{python} {os.path.relpath(PROJECT_DIR / 'manage.py')}"


def _status_line(info: TaskInfo | None) -> str:
    if info is None:
        return "MISSING (no row)"

    parts = [f"{info.status:<9}", f"attempt {info.attempts}/{info.max_attempts}"]
    progress = info.progress
    if isinstance(progress, dict):
        done, total = progress.get("done"), progress.get("total")
        amount = f"{done}/{total}" if total is not None else f"{done}"
        parts.append(f"progress {amount} {progress.get('message', '')}".rstrip())
    if info.failed_reason is not None:
        parts.append(f"last error {info.failed_reason.error_code}")
    return "  ".join(parts)


def _timing(info: TaskInfo | None) -> str:
    if info is None or info.started_at is None:
        return ""
    waited = (info.started_at - info.enqueued_at).total_seconds()
    return f", started {waited:.1f} s after it was sent"
