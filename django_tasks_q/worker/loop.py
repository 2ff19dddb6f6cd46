"""The worker's main loop: register, claim into free slots, drain, stop."""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models.functions import Now

from .. import claims
from ..claims import ClaimedTask, CompletedAndClaimed, NextClaim
from ..exceptions import TasksQError
from ..models import Worker as WorkerRow
from .connections import (
    ConnectionLabeller,
    StrayConnectionCollector,
    drop_broken_connections,
)
from .heartbeat import HeartbeatThread
from .persistence import DurableWriter
from .pools import TaskPool, ThreadPool
from .stop_signals import SignalRelay
from .wakeups import Wakeups

logger = logging.getLogger("django_tasks_q.worker")


def application_name(worker_id: str) -> str:
    """How the worker's PostgreSQL connections are named in pg_stat_activity."""
    return f"tasks-q worker {worker_id}"


#: Seconds a task given back at the drain timeout stays unclaimable when its
#: thread cannot be stopped: ample time for the process to exit.
EXIT_GRACE = 2.0


#: Seconds the claim loop pauses after submitting tasks, before its next
#: query: enough for a slot thread to start its task; so short that a task
#: coming due meanwhile starts at most this late.
START_PAUSE = 0.005


class WorkerIdInUse(TasksQError):
    """The worker id given to a new worker is already recorded."""


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    queues: list[str]
    concurrency: int = 4
    burst: bool = False
    max_tasks: int | None = None
    poll_interval: float = 1.0
    database: str = "default"
    drain_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    dead_worker_after: float = 30.0
    max_crashes: int = 3
    write_retry_budget: float = 120.0
    completion_batch_wait: float = 0.0
    pool: str = "threads"
    install_signal_handlers: bool = True


class Worker:
    """Claims tasks from ``queues`` and runs them on a pool of threads or of
    child processes.

    ``run()`` returns once the worker has stopped: after a signal, after
    ``max_tasks`` claims, or, in burst mode, when nothing is claimable.
    """

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.id = options.worker_id
        self.stopping = threading.Event()
        self._wakeups = Wakeups(
            worker_id=self.id, database=options.database, queues=options.queues
        )
        #: What each slot runs now; a thread pool slot may go on to further
        #: tasks under the same future (``next_task``).
        self._running: dict[Future[None], ClaimedTask] = {}
        self._running_lock = threading.Lock()
        #: Whether the last claim filled every place it asked for, so that
        #: more tasks are probably ready.
        self._backlog = False
        self._claimed_total = 0
        self._signals_received = 0
        self._signals = SignalRelay(self._on_signal, [signal.SIGTERM, signal.SIGINT])
        #: Task threads still running at exit; the process must then end with
        #: ``os._exit()``, since Python would otherwise wait for them.
        self.abandoned_threads = 0
        self._strays = StrayConnectionCollector()
        self._labeller = ConnectionLabeller(application_name(self.id))
        self._heartbeat = HeartbeatThread(
            worker_id=self.id,
            database=options.database,
            interval=options.heartbeat_interval,
            dead_worker_after=options.dead_worker_after,
            max_crashes=options.max_crashes,
            on_start=self._strays.own_current_thread,
            held_leases=self._held_leases,
        )
        self._paused_for_heartbeat = False
        self._writer = DurableWriter(
            budget=options.write_retry_budget, stopping=self.stopping
        )
        self._pool = self._make_pool()
        self._cancels_checked_at = 0.0
        self._cancels_requested: set[uuid.UUID] = set()

    def _make_pool(self) -> TaskPool:
        if self.options.pool == "prefork":
            # Imported here: multiprocessing would cost every thread pool
            # worker memory it never uses.
            from .prefork import PreforkPool

            return PreforkPool(
                size=self.options.concurrency,
                worker_id=self.id,
                application_name=application_name(self.id),
                max_crashes=self.options.max_crashes,
                writer=self._writer,
                on_thread_start=self._strays.own_current_thread,
            )
        return ThreadPool(
            size=self.options.concurrency,
            writer=self._writer,
            strays=self._strays,
            feed=self,
            completion_batch_wait=self.options.completion_batch_wait,
        )

    # Lifecycle

    def run(self) -> None:
        # Connections opened before this point keep their old name.
        connections.close_all()
        self._labeller.install()
        self._register()
        if self.options.install_signal_handlers:
            self._signals.install()
        self._strays.own_current_thread()
        self._strays.install()
        self._heartbeat.start()
        self._pool.start()
        self._wakeups.start()
        try:
            self._loop()
        finally:
            # A second signal during the shutdown still ends it at once.
            self._shut_down()
            self._signals.uninstall()

    def stop(self) -> None:
        """Stop claiming; ``run()`` returns once running tasks have finished or
        the drain timeout has given them back."""
        self.stopping.set()
        self._wakeups.wake()

    def _on_signal(self, signum: int) -> None:
        # Called on the signal relay's thread, never inside a handler.
        self._signals_received += 1
        if self._signals_received > 1:
            # A second signal means "now": skip the drain.
            os._exit(1)
        logger.warning(
            "Worker id=%s received %s; finishing running tasks before exiting",
            self.id,
            signal.Signals(signum).name,
            extra={"action": "worker_stopping", "worker_id": self.id},
        )
        self.stop()

    def _register(self) -> None:
        try:
            with transaction.atomic(using=self.options.database):
                WorkerRow.objects.using(self.options.database).create(
                    id=self.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    queues=self.options.queues,
                    concurrency=self.options.concurrency,
                )
        except IntegrityError:
            raise WorkerIdInUse(
                f"Worker id {self.id!r} was already used by another worker start; "
                "worker ids must be unique per process start."
            ) from None
        logger.info(
            "Worker id=%s started queues=%s concurrency=%s",
            self.id,
            ",".join(self.options.queues),
            self.options.concurrency,
            extra={
                "action": "worker_started",
                "worker_id": self.id,
                "queues": self.options.queues,
            },
        )

    def _shut_down(self) -> None:
        self._wakeups.stop()
        self._release_unstarted()
        self._drain()
        self._pool.shutdown(wait=not self.abandoned_threads)
        # With threads abandoned the process ends with os._exit() at once;
        # an unfinished beat must not hold it up.
        self._heartbeat.stop(wait=not self.abandoned_threads)
        self._strays.collect()
        self._strays.uninstall()
        self._labeller.uninstall()
        try:
            WorkerRow.objects.using(self.options.database).filter(pk=self.id).update(
                stopped_at=Now()
            )
        except DatabaseError:
            logger.exception(
                "Worker id=%s could not record its stop",
                self.id,
                extra={"action": "worker_stop_failed", "worker_id": self.id},
            )
        logger.info(
            "Worker id=%s stopped after %s claim(s)",
            self.id,
            self._claimed_total,
            extra={"action": "worker_stopped", "worker_id": self.id},
        )

    def _release_unstarted(self) -> None:
        with self._running_lock:
            queued = list(self._running.items())
        for future, claimed in queued:
            if future.cancel():
                self._settle(claimed, "release", lambda c: claims.release(c))

    def _drain(self) -> None:
        """Wait up to the drain timeout for running tasks, then give back the
        ones still running so another worker runs them again."""
        with self._running_lock:
            slots = list(self._running)
        if not slots:
            return

        _done, still_running = futures.wait(slots, timeout=self.options.drain_timeout)
        with self._running_lock:
            running = dict(self._running)
        reason = (
            f"Worker {self.id} stopped after waiting "
            f"{self.options.drain_timeout:g}s for the attempt to finish."
        )
        abandoned = 0
        for future in still_running:
            claimed = running.get(future)
            if claimed is None:
                continue  # It finished just now.
            stopped = self._pool.abort(claimed)
            if not stopped:
                abandoned += 1
            # A thread runs the task on until the process exits, so another
            # worker must not start it before then.
            grace = 0.0 if stopped else EXIT_GRACE
            self._settle(
                claimed,
                "give back",
                functools.partial(claims.give_back, reason=reason, claimable_in=grace),
            )
            logger.warning(
                "Worker id=%s gave back task id=%s after the drain timeout",
                self.id,
                claimed.id,
                extra={
                    "action": "task_given_back",
                    "worker_id": self.id,
                    "task_id": str(claimed.id),
                },
            )
        # Threads cannot be stopped: the caller must end the process.
        self.abandoned_threads = abandoned

    def _settle(
        self,
        claimed: ClaimedTask,
        what: str,
        apply: Callable[[ClaimedTask], bool],
    ) -> None:
        """A last write while stopping; if the database is down, the rescue
        of this worker's tasks does it later."""
        try:
            apply(claimed)
        except DatabaseError:
            logger.exception(
                "Worker id=%s could not %s task id=%s; it will be rescued",
                self.id,
                what,
                claimed.id,
                extra={
                    "action": "task_settle_failed",
                    "worker_id": self.id,
                    "task_id": str(claimed.id),
                },
            )
            drop_broken_connections()

    # Claiming

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self._wakeups.clear()
            # Before the claim: its query's Python would hold the GIL that
            # the tasks just handed to slots need to start.
            self._forward_cancel_requests()
            free_slots = self._free_slots()
            claimed = self._claim(free_slots) if free_slots else []
            for claimed_task in claimed:
                self._submit(claimed_task)

            if self._max_tasks_reached():
                logger.info(
                    "Worker id=%s reached --max-tasks=%s",
                    self.id,
                    self.options.max_tasks,
                    extra={"action": "worker_max_tasks", "worker_id": self.id},
                )
                break
            if self.options.burst and not claimed and not self._running:
                logger.info(
                    "Worker id=%s found nothing to claim; burst mode ends",
                    self.id,
                    extra={"action": "worker_burst_done", "worker_id": self.id},
                )
                break

            # A full batch means more may be waiting: claim again at once
            # when a slot frees up; otherwise sleep until a notification, a
            # finished task, the next scheduled task or the next poll.
            if free_slots and len(claimed) == free_slots and self._free_slots():
                continue
            ran_dry = bool(free_slots) and len(claimed) < free_slots
            if claimed and ran_dry:
                # Let the slots start what was just claimed before asking when
                # the next task is due: that query's Python would hold the GIL
                # the starting tasks need. A wake-up ends this pause too.
                self._wakeups.wait(START_PAUSE)
            self._wakeups.wait(self._next_wait(ran_dry))

    def _next_wait(self, ran_dry: bool) -> float:
        """Seconds until the next claim pass, at most the poll interval.

        When the queue ran dry, the earliest scheduled task (a delayed send,
        a retry's backoff) may come due sooner; wake up right on time for it.
        """
        poll = self.options.poll_interval
        if not ran_dry:
            return poll
        try:
            due_in = claims.seconds_until_next(
                queues=self.options.queues, database=self.options.database
            )
        except DatabaseError:
            drop_broken_connections()
            return poll
        if due_in is None:
            return poll
        return min(max(due_in, 0.0), poll)

    def _free_slots(self) -> int:
        if not self._heartbeat_healthy():
            return 0
        with self._running_lock:
            running = len(self._running)
        free = self.options.concurrency - running
        if self.options.max_tasks is not None:
            free = min(free, self.options.max_tasks - self._claimed_total)
        return max(free, 0)

    def _heartbeat_healthy(self) -> bool:
        healthy = self._heartbeat.healthy
        if healthy == self._paused_for_heartbeat:
            self._paused_for_heartbeat = not healthy
            logger.warning(
                "Worker id=%s %s claiming: its heartbeat %s",
                self.id,
                "resumes" if healthy else "pauses",
                "works again" if healthy else "is failing",
                extra={
                    "action": "claims_resumed" if healthy else "claims_paused",
                    "worker_id": self.id,
                },
            )
        return healthy

    def _max_tasks_reached(self) -> bool:
        return (
            self.options.max_tasks is not None
            and self._claimed_total >= self.options.max_tasks
        )

    def _claim(self, limit: int) -> list[ClaimedTask]:
        try:
            claimed = claims.claim(
                worker_id=self.id,
                queues=self.options.queues,
                limit=limit,
                database=self.options.database,
                start=self._pool.starts_at_claim,
            )
        except DatabaseError:
            logger.exception(
                "Worker id=%s could not claim tasks; retrying after the poll interval",
                self.id,
                extra={"action": "claim_failed", "worker_id": self.id},
            )
            drop_broken_connections()
            return []

        self._count_claimed(claimed, filled=len(claimed) == limit)
        return claimed

    def _count_claimed(self, claimed: list[ClaimedTask], *, filled: bool) -> None:
        """Note a claim that got ``claimed``; ``filled``: it got all it asked
        for, so more tasks are probably ready."""
        with self._running_lock:
            self._claimed_total += len(claimed)
            self._backlog = filled
        self._wakeups.set_busy(filled)
        if claimed:
            logger.debug(
                "Worker id=%s claimed %s task(s)",
                self.id,
                len(claimed),
                extra={"action": "tasks_claimed", "worker_id": self.id},
            )

    # A thread pool slot's next task (pools.SlotFeed)
    #
    # While the queue has a backlog, a slot whose task is over claims and
    # starts its next task itself, in the completion's statement where the
    # database allows: the claim loop would add a round trip between threads
    # per task, and a separate claim a statement and a commit. With
    # --max-tasks every claim goes through the loop, which keeps the count.

    def next_claim(self, finished: ClaimedTask) -> NextClaim | None:
        if not self._may_claim_for_slot(finished):
            return None
        return NextClaim(queues=self.options.queues)

    def next_task(
        self, finished: ClaimedTask, folded: CompletedAndClaimed | None
    ) -> ClaimedTask | None:
        if folded is not None:
            next_tasks = [folded.next_task] if folded.next_task else []
            self._count_claimed(next_tasks, filled=folded.filled)
            if folded.next_task is not None:
                return self._hand_to_slot(finished, folded.next_task)
            if not folded.filled:
                return None
            # It claimed only a task that could not run: try once more.

        if not self._may_claim_for_slot(finished):
            return None
        claimed = self._claim(1)
        return self._hand_to_slot(finished, claimed[0]) if claimed else None

    def _may_claim_for_slot(self, finished: ClaimedTask) -> bool:
        with self._running_lock:
            backlog = self._backlog
            holds_slot = any(held is finished for held in self._running.values())
        return (
            holds_slot
            and backlog
            and not self.stopping.is_set()
            and self.options.max_tasks is None
            and self._heartbeat.healthy
        )

    def _hand_to_slot(self, finished: ClaimedTask, claimed: ClaimedTask) -> ClaimedTask:
        """Record ``claimed`` as what the slot that ran ``finished`` runs now."""
        with self._running_lock:
            slot = next(
                future for future, held in self._running.items() if held is finished
            )
            self._running[slot] = claimed
        return claimed

    def _submit(self, claimed: ClaimedTask) -> None:
        # The callback is attached after the future is recorded, so it always
        # finds it, even when the attempt is already over.
        future = self._pool.submit(claimed)
        with self._running_lock:
            self._running[future] = claimed
        future.add_done_callback(self._on_done)

    def _held_leases(self) -> set[uuid.UUID]:
        with self._running_lock:
            return {claimed.lease_token for claimed in self._running.values()}

    def _forward_cancel_requests(self) -> None:
        """Once per poll interval while tasks run, pass on cancel requests."""
        now = time.monotonic()
        if now - self._cancels_checked_at < self.options.poll_interval:
            return
        with self._running_lock:
            running = {claimed.id: claimed for claimed in self._running.values()}
        if not running:
            self._cancels_requested.clear()
            return

        self._cancels_checked_at = now
        try:
            requests = claims.cancel_requests(
                worker_id=self.id, database=self.options.database
            )
        except DatabaseError:
            drop_broken_connections()
            return

        self._cancels_requested &= set(running)
        for task_id, lease_token in requests:
            claimed = running.get(task_id)
            if claimed is None or claimed.lease_token != lease_token:
                continue
            if task_id in self._cancels_requested:
                continue
            if not self._pool.request_cancel(claimed):
                # Claimed as running, but its slot has not taken it up yet.
                continue
            self._cancels_requested.add(task_id)
            logger.info(
                "Worker id=%s asked task id=%s to stop: it was cancelled",
                self.id,
                task_id,
                extra={
                    "action": "task_cancel_forwarded",
                    "worker_id": self.id,
                    "task_id": str(task_id),
                },
            )

    def _on_done(self, future: Future[None]) -> None:
        with self._running_lock:
            self._running.pop(future, None)
        self._wakeups.wake()
