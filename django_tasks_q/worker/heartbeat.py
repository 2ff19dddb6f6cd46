"""The worker's heartbeat thread: beat, sweep for dead workers' tasks, and
give back tasks the worker holds without knowing it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from django.db import DatabaseError, connections

from ..liveness import heartbeat, release_orphans, rescue_abandoned
from .connections import drop_broken_connections

logger = logging.getLogger("django_tasks_q.worker")

#: Share of DEAD_WORKER_AFTER without a heartbeat after which a worker stops
#: claiming: others will soon rescue what it holds, so it must take no more.
UNHEALTHY_SHARE = 0.75

#: Seconds past two intervals after which a heartbeat counts as late.
LATE_BEAT_SLACK = 0.5

#: Seconds a task must have been claimed before its worker may judge it an
#: orphan: a claim that just committed may not be registered yet.
ORPHAN_MIN_AGE = 5.0


class HeartbeatThread(threading.Thread):
    """Beats every ``interval`` seconds on its own database connection."""

    def __init__(
        self,
        *,
        worker_id: str,
        database: str,
        interval: float,
        dead_worker_after: float,
        max_crashes: int,
        on_start: Callable[[], None],
        held_leases: Callable[[], set[uuid.UUID]],
    ) -> None:
        super().__init__(name="tasks-q-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.database = database
        self.interval = interval
        self.dead_worker_after = dead_worker_after
        self.max_crashes = max_crashes
        self._on_start = on_start
        self._held_leases = held_leases
        self._stopped = threading.Event()
        self._last_beat = time.monotonic()
        self._rescue_after = 0.0

    @property
    def healthy(self) -> bool:
        """Whether the last heartbeat is recent enough to keep claiming."""
        silence = time.monotonic() - self._last_beat
        return silence < self.dead_worker_after * UNHEALTHY_SHARE

    def stop(self, *, wait: bool = True) -> None:
        self._stopped.set()
        if wait:
            self.join(timeout=self.interval + 5)

    def run(self) -> None:
        self._on_start()
        try:
            while True:
                # After a failure, try again soon: claims resume only once a
                # beat gets through.
                wait = self.interval if self.beat() else min(self.interval, 1.0)
                if self._stopped.wait(wait):
                    return
        finally:
            connections.close_all()

    def _note_beat(self) -> None:
        """Record a beat; after a late one, hold off rescuing for a while.

        A beat comes late when this process was frozen, or the database
        stalled or was unreachable. A stall of the database delays every
        worker's beat alike, and the first to get through would see the
        others' beats as stale and rescue the tasks of live workers. Holding
        off for DEAD_WORKER_AFTER lets each live worker beat again first.
        """
        now = time.monotonic()
        gap = now - self._last_beat
        self._last_beat = now
        if gap <= self.interval * 2 + LATE_BEAT_SLACK:
            return

        self._rescue_after = now + self.dead_worker_after
        logger.warning(
            "Worker id=%s beat %.1fs after its last beat; it rescues no task "
            "for the next %gs, while the other workers catch up",
            self.worker_id,
            gap,
            self.dead_worker_after,
            extra={"action": "rescue_held_off", "worker_id": self.worker_id},
        )

    def beat(self) -> bool:
        """Heartbeat, then sweep; ``False`` if the database did not answer."""
        try:
            if not heartbeat(self.worker_id, self.database):
                logger.warning(
                    "Worker id=%s has no row any more; its tasks will be rescued",
                    self.worker_id,
                    extra={"action": "worker_row_missing", "worker_id": self.worker_id},
                )
            self._note_beat()
            if time.monotonic() >= self._rescue_after:
                rescue_abandoned(
                    database=self.database,
                    dead_worker_after=self.dead_worker_after,
                    max_crashes=self.max_crashes,
                )
            # Snapshot the leases first: a task that ends meanwhile is no
            # longer held, and one claimed meanwhile is too recent to count.
            held = self._held_leases()
            release_orphans(
                worker_id=self.worker_id,
                held_leases=held,
                database=self.database,
                older_than=max(self.interval * 2, ORPHAN_MIN_AGE),
            )
            return True
        except DatabaseError:
            logger.warning(
                "Worker id=%s could not heartbeat or sweep; trying again in %ss",
                self.worker_id,
                self.interval,
                exc_info=True,
                extra={"action": "heartbeat_failed", "worker_id": self.worker_id},
            )
            drop_broken_connections()
            return False
