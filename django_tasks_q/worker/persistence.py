"""Storing an attempt's outcome when the database is briefly unreachable.

A task that ran to the end must not be lost because the database restarted
as it finished. Each write about an attempt is retried with backoff while
the failure looks like an outage (a lost connection, a locked database), for
at most ``WRITE_RETRY_BUDGET`` seconds. Past that the outcome is given up:
the attempt is handed back to the queue as soon as the database answers
again, so another attempt runs the task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError

from .. import claims
from ..claims import ClaimedTask
from .connections import drop_broken_connections

logger = logging.getLogger("django_tasks_q.worker")

#: Errors that say "the database is unreachable right now", not "this write is
#: wrong": a lost or refused connection, a restarting server, a locked SQLite
#: file.
OUTAGE_ERRORS = (OperationalError, InterfaceError)

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0


class OutcomeLost(Exception):
    """A write kept failing for the whole retry budget."""


class DurableWriter:
    """Retries the fenced writes of attempts through database outages."""

    def __init__(self, *, budget: float, stopping: threading.Event) -> None:
        self.budget = budget
        self.stopping = stopping

    def write(self, claimed: ClaimedTask, what: str, apply: Callable[[], bool]) -> bool:
        """Run ``apply`` until it gets an answer; return that answer.

        Raises ``OutcomeLost`` when the database stays unreachable for the
        whole budget.
        """
        deadline = time.monotonic() + self.budget
        backoff = FIRST_BACKOFF
        failures = 0

        while True:
            try:
                return apply()
            except OUTAGE_ERRORS as exc:
                failures += 1
                drop_broken_connections()
                if time.monotonic() + backoff > deadline:
                    raise OutcomeLost(
                        f"The {what} write of task {claimed.id} failed for "
                        f"{self.budget:g}s: {exc}"
                    ) from exc
                if failures == 1:
                    logger.warning(
                        "Task id=%s: the %s write failed (%s); retrying for up to %gs",
                        claimed.id,
                        what,
                        exc,
                        self.budget,
                        extra=_extra(claimed, "write_retrying", what),
                    )
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def hand_back(self, claimed: ClaimedTask, reason: str) -> None:
        """After ``OutcomeLost``: put the attempt back in the queue once the
        database answers, unless the worker stops first (then the rescue of
        its tasks does it)."""
        logger.error(
            "Task id=%s: gave up storing the outcome of attempt %s; %s",
            claimed.id,
            claimed.attempt,
            reason,
            extra=_extra(claimed, "outcome_lost", "outcome"),
        )
        backoff = FIRST_BACKOFF
        while not self.stopping.is_set():
            try:
                claims.settle_abandoned(claimed, reason)
                return
            except OUTAGE_ERRORS:
                drop_broken_connections()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


def _extra(claimed: ClaimedTask, action: str, what: str) -> dict[str, str]:
    return {
        "action": action,
        "task_id": str(claimed.id),
        "worker_id": claimed.worker_id,
        "write": what,
    }
