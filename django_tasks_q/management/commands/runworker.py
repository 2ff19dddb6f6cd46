"""``manage.py runworker``: parse options, hand them to ``Worker``."""

from __future__ import annotations

import logging
import os
import sys
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from django_tasks_q.conf import TasksQSettings, get_settings, is_valid_queue_name
from django_tasks_q.ids import new_worker_id
from django_tasks_q.registry import registry
from django_tasks_q.worker.logs import VERBOSITY_LEVELS, configure_worker_logging
from django_tasks_q.worker.loop import Worker, WorkerIdInUse, WorkerOptions
from django_tasks_q.worker.pools import POOL_KINDS


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise ArgumentTypeError(f"{value!r} is not 1 or more")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a number") from None
    if number <= 0:
        raise ArgumentTypeError(f"{value!r} is not more than 0")
    return number


def _queue_list(value: str) -> list[str]:
    queues = [name.strip() for name in value.split(",") if name.strip()]
    for name in queues:
        if not is_valid_queue_name(name):
            raise ArgumentTypeError(
                f"queue name {name!r} is invalid; use letters, digits, '_', '.' "
                "and '-' (at most 48 characters)"
            )
    if not queues:
        raise ArgumentTypeError("give at least one queue name")
    return queues


def default_queues(settings: TasksQSettings) -> list[str]:
    """Every queue in QUEUES, plus DEFAULT_QUEUE, where unnamed tasks go."""
    queues = list(settings.queues)
    if settings.default_queue not in queues:
        queues.append(settings.default_queue)
    return queues


class Command(BaseCommand):
    help = (
        "Run a django-tasks-q worker: claim tasks from the database and run "
        "them until stopped with SIGTERM or Ctrl-C."
    )
    # The checks of what a worker uses: models, signals, async support and the
    # compatibility checks, which include django-tasks-q's own. The web side's
    # (URLs, templates, admin, static files) would import all of it into every
    # worker process, and a fault there must not stop the tasks.
    requires_system_checks = [
        Tags.models,
        Tags.signals,
        Tags.async_support,
        Tags.compatibility,
    ]

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--queues",
            type=_queue_list,
            default=None,
            help=(
                "Comma-separated queues to claim from, e.g. 'default,emails'. "
                "Default: every queue in TASKS_Q['QUEUES'] and "
                "TASKS_Q['DEFAULT_QUEUE']."
            ),
        )
        parser.add_argument(
            "--concurrency",
            type=_positive_int,
            default=4,
            help=(
                "Tasks run at once: threads, or child processes with "
                "--pool prefork. Default: 4."
            ),
        )
        parser.add_argument(
            "--pool",
            choices=POOL_KINDS,
            default="threads",
            help=(
                "threads: tasks run in threads of this process and async tasks "
                "share one event loop. prefork: each task runs in a child "
                "process, which is killed and replaced when the task times out, "
                "is cancelled or crashes it. Default: threads."
            ),
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit once nothing is claimable instead of waiting for more.",
        )
        parser.add_argument(
            "--max-tasks",
            type=_positive_int,
            default=None,
            help="Exit after claiming this many tasks (and finishing them).",
        )
        parser.add_argument(
            "--poll-interval",
            type=_positive_float,
            default=None,
            help=(
                "Seconds between looks for new tasks when idle. "
                "Default: TASKS_Q['POLL_INTERVAL'] (1.0)."
            ),
        )
        parser.add_argument(
            "--drain-timeout",
            type=_positive_float,
            default=None,
            help=(
                "Seconds to let running tasks finish after SIGTERM or Ctrl-C; "
                "tasks still running then go back to the queue. "
                "Default: TASKS_Q['DRAIN_TIMEOUT'] (30)."
            ),
        )
        parser.add_argument(
            "--worker-id",
            default=None,
            help=(
                "Identifier recorded on the tasks this worker runs; must be "
                "unique per process. Default: host-pid-random."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_worker_logging(
            VERBOSITY_LEVELS.get(options["verbosity"], logging.DEBUG)
        )
        self._check_task_modules()

        settings = get_settings()
        worker = Worker(
            WorkerOptions(
                worker_id=options["worker_id"] or new_worker_id(),
                queues=options["queues"] or default_queues(settings),
                concurrency=options["concurrency"],
                burst=options["burst"],
                max_tasks=options["max_tasks"],
                poll_interval=options["poll_interval"] or settings.poll_interval,
                drain_timeout=options["drain_timeout"] or settings.drain_timeout,
                heartbeat_interval=settings.heartbeat_interval,
                dead_worker_after=settings.dead_worker_after,
                max_crashes=settings.max_crashes,
                write_retry_budget=settings.write_retry_budget,
                completion_batch_wait=settings.completion_batch_wait,
                pool=options["pool"],
                database=settings.database,
            )
        )
        try:
            worker.run()
        except WorkerIdInUse as exc:
            raise CommandError(str(exc)) from exc

        if worker.abandoned_threads:
            # Their tasks were given back; Python would wait for the threads.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def _check_task_modules(self) -> None:
        if registry.import_send_errors:
            failure = registry.import_send_errors[0]
            raise CommandError(
                f"Tasks module {failure.module!r} sends a task while it is imported "
                f"({failure.error}); move the send into a function."
            )
