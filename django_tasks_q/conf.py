"""The ``TASKS_Q`` setting: typed defaults, read lazily, reset in tests.

Nothing here reads ``django.conf.settings`` at import time; ``get_settings()``
builds the value on first use and ``setting_changed`` clears it, so
``override_settings(TASKS_Q=...)`` works.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

#: Queue names become part of PostgreSQL channel names, so they are kept to
#: a short, quoting-safe alphabet.
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


#: Priorities are stored in a 32-bit integer column.
PRIORITY_RANGE = range(-(2**31), 2**31)


def is_valid_queue_name(name: object) -> bool:
    return isinstance(name, str) and QUEUE_NAME_RE.fullmatch(name) is not None


def is_valid_priority(priority: object) -> bool:
    return (
        isinstance(priority, int)
        and not isinstance(priority, bool)
        and priority in PRIORITY_RANGE
    )


@dataclass(frozen=True)
class TasksQSettings:
    """The resolved ``TASKS_Q`` setting; each field is one upper-case key."""

    #: Database alias that holds the task tables.
    database: str = "default"

    #: Per-queue options, keyed by queue name.
    queues: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})

    #: Queue used by tasks that do not name one.
    default_queue: str = "default"

    #: Seconds between claim attempts when nothing wakes the worker.
    poll_interval: float = 1.0

    #: Seconds between a worker's heartbeats.
    heartbeat_interval: float = 5.0

    #: Seconds without a heartbeat after which a worker counts as dead.
    dead_worker_after: float = 30.0

    #: Use PostgreSQL LISTEN/NOTIFY where available.
    listen: bool = True

    #: Prepare the statements that claim, start, complete and send tasks on
    #: the PostgreSQL server (see ``django_tasks_q.prepared``).
    prepared_statements: bool = True

    #: Largest encoded size of one task's arguments, in bytes.
    max_payload_bytes: int = 1024 * 1024

    #: Seconds a worker waits for running tasks after the first SIGTERM.
    drain_timeout: float = 30.0

    #: Worker deaths a task may cause before it ends FAILED / WORKER_CRASHED.
    max_crashes: int = 3

    #: Seconds a worker retries storing an attempt's outcome while the
    #: database is unreachable, before it gives the outcome up.
    write_retry_budget: float = 120.0

    #: Seconds a thread pool slot whose task completed waits for the other
    #: busy slots, to store their results in one statement (PostgreSQL);
    #: 0 stores each result on its own.
    completion_batch_wait: float = 0.0


_NUMBER_KEYS = {
    "poll_interval",
    "heartbeat_interval",
    "dead_worker_after",
    "drain_timeout",
    "write_retry_budget",
}


def _is_positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _validate(values: dict[str, Any]) -> None:
    for key in _NUMBER_KEYS:
        value = values[key]
        if not _is_positive_number(value):
            raise ImproperlyConfigured(
                f"TASKS_Q[{key.upper()!r}] must be a positive number of seconds, "
                f"not {value!r}."
            )

    wait = values["completion_batch_wait"]
    if isinstance(wait, bool) or not (wait == 0 or _is_positive_number(wait)):
        raise ImproperlyConfigured(
            "TASKS_Q['COMPLETION_BATCH_WAIT'] must be 0 or a positive number of "
            f"seconds, not {wait!r}."
        )

    size = values["max_payload_bytes"]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ImproperlyConfigured(
            f"TASKS_Q['MAX_PAYLOAD_BYTES'] must be a positive integer, not {size!r}."
        )

    crashes = values["max_crashes"]
    if isinstance(crashes, bool) or not isinstance(crashes, int) or crashes < 1:
        raise ImproperlyConfigured(
            f"TASKS_Q['MAX_CRASHES'] must be a positive integer, not {crashes!r}."
        )

    if not isinstance(values["queues"], dict) or not values["queues"]:
        raise ImproperlyConfigured(
            "TASKS_Q['QUEUES'] must be a non-empty dict of queue names to "
            f"options, not {values['queues']!r}."
        )

    for key in ("listen", "prepared_statements"):
        if not isinstance(values[key], bool):
            raise ImproperlyConfigured(
                f"TASKS_Q[{key.upper()!r}] must be True or False, not {values[key]!r}."
            )


@cache
def get_settings() -> TasksQSettings:
    """Return the project's ``TASKS_Q`` setting merged over the defaults."""
    configured = getattr(django_settings, "TASKS_Q", {})
    if not isinstance(configured, dict):
        raise ImproperlyConfigured(
            f"The TASKS_Q setting must be a dict, not {type(configured).__name__}."
        )

    known = {f.name.upper(): f.name for f in dataclasses.fields(TasksQSettings)}
    unknown = sorted(set(configured) - set(known))
    if unknown:
        raise ImproperlyConfigured(
            f"TASKS_Q has an unknown key {unknown[0]!r}; "
            f"the known keys are {', '.join(sorted(known))}."
        )

    values = dataclasses.asdict(TasksQSettings())
    values.update({known[key]: value for key, value in configured.items()})
    _validate(values)
    return TasksQSettings(**values)


@receiver(setting_changed)
def _reset_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS_Q":
        get_settings.cache_clear()
