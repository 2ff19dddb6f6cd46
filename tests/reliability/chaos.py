"""The chaos harness: worker clusters, faults, probe records and invariants.

A scenario starts a ``Cluster`` of real ``runworker`` processes, sends probe
tasks (``tests.taskapp.tasks.chaos.probe``), injects faults through a
``FaultInjector``, waits for the queue to settle and hands what happened to
``check_invariants``, whose ``Report`` says each broken invariant in a
sentence. Each step is one call, so a new scenario (a database restart, a
poison task in a prefork pool) only combines them.

Clocks: the probes and the injector use ``time.time()`` of this host, which
every worker shares, being a child of the test run; rescue latencies compare
the database's own timestamps with the database clock only.

``TASKS_Q_CHAOS_MINUTES`` turns the quick tier into the long one: the load
scenarios run that many minutes and the counted ones grow with it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from django.db import connection, connections
from django.db.models import F

from django_tasks_q import TaskSendError
from django_tasks_q.codes import ErrorCode
from django_tasks_q.models import Task, TaskAttempt, Worker
from django_tasks_q.states import AttemptOutcome, TaskStatus
from django_tasks_q.worker.loop import application_name
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks import chaos as probe_tasks
from tests.taskapp.tasks.chaos import probe

MINUTES_ENV = "TASKS_Q_CHAOS_MINUTES"
SUMMARY_ENV = "TASKS_Q_CHAOS_SUMMARY"

#: Seconds around a fault within which it explains what an execution on the
#: faulted worker went through; covers a heartbeat or two of scheduling lag.
FAULT_SLACK = 2.0

#: Seconds a worker gets to exit after SIGTERM beyond its drain timeout.
EXIT_GRACE = 60.0

FINISHED = [str(status) for status in TaskStatus.finished()]
#: The timestamp that opens each record of a worker's log, local time.
_LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", re.M)
_FENCED_OUT = re.compile(r"lost its lease; the (.+?) write was not applied")


# Scale


def long_tier_minutes() -> float | None:
    """The long tier's minutes, or ``None`` in the quick tier."""
    value = os.environ.get(MINUTES_ENV)
    return float(value) if value else None


def load_seconds(quick: float) -> float:
    """How long a load scenario runs: ``quick`` seconds, or the long tier's."""
    minutes = long_tier_minutes()
    return quick if minutes is None else minutes * 60


def scaled(quick: int) -> int:
    """A count of the quick tier, multiplied by the long tier's minutes."""
    minutes = long_tier_minutes()
    return quick if minutes is None else round(quick * max(1.0, minutes))


def on_postgresql() -> bool:
    return connection.vendor == "postgresql"


# Probe records


@dataclass(frozen=True)
class Execution:
    """One run of the probe task, as the probe recorded it."""

    task_id: str
    key: int
    attempt: int
    lease_token: str
    worker_id: str
    pid: int
    started_at: float
    finished_at: float | None

    def end(self, deaths: Mapping[str, Death]) -> tuple[float, float]:
        """When the run stopped, as (not before, not after): its recorded end,
        else the death of its worker, which only brackets it."""
        if self.finished_at is not None:
            return self.finished_at, self.finished_at
        death = deaths.get(self.worker_id)
        if death is None:
            return math.inf, math.inf
        return death.alive_at, death.seen_at


def reset_probe_table() -> None:
    """Create the probe table if needed and empty it; Django's flush skips it."""
    probe_connection = probe_tasks.connect()
    try:
        probe_tasks.execute(probe_connection, f"DELETE FROM {probe_tasks.TABLE}")
    finally:
        probe_connection.close()


def read_executions() -> dict[str, list[Execution]]:
    """Every recorded execution, by task id, in attempt order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_id, task_key, attempt, lease_token, worker_id, pid, "
            f"started_at, finished_at FROM {probe_tasks.TABLE} "
            "ORDER BY task_id, attempt, started_at"
        )
        rows = cursor.fetchall()

    executions: dict[str, list[Execution]] = {}
    for row in rows:
        execution = Execution(*row)
        executions.setdefault(execution.task_id, []).append(execution)
    return executions


# Workers


@dataclass(frozen=True)
class Timings:
    """Compressed liveness settings for the workers of one scenario."""

    heartbeat_interval: float
    dead_worker_after: float
    max_crashes: int = 3
    #: ``COMPLETION_BATCH_WAIT``: above 0, slots store results in batches.
    completion_batch_wait: float = 0.0

    def settings(self) -> dict[str, float | int]:
        return {
            "HEARTBEAT_INTERVAL": self.heartbeat_interval,
            "DEAD_WORKER_AFTER": self.dead_worker_after,
            "MAX_CRASHES": self.max_crashes,
            "COMPLETION_BATCH_WAIT": self.completion_batch_wait,
        }

    @property
    def rescue_bound(self) -> float:
        """Seconds from a worker's death to its tasks' rescue, at most: the
        dead-worker threshold, one sweep interval, and 2 s of lag."""
        return self.dead_worker_after + self.heartbeat_interval + 2


@dataclass(frozen=True)
class Death:
    """When a worker process ended, bracketed by what the harness can see."""

    #: The last moment it surely ran: the signal that killed it, or the
    #: timestamp of its last log line, written just before it exits.
    alive_at: float
    #: The moment its end was seen, a few milliseconds late at most.
    seen_at: float


@dataclass
class ChaosWorker:
    """One ``runworker`` process of a cluster, and how it ended."""

    id: str
    process: WorkerProcess
    signalled_at: float | None = None
    death: Death | None = None
    exit_code: int | None = None

    @property
    def exited_at(self) -> float | None:
        return self.death.seen_at if self.death else None

    def signal(self, sig: signal.Signals) -> float:
        """Send ``sig``; return when, as ``time.time()``."""
        self.signalled_at = time.time()
        self.process.send_signal(sig)
        return self.signalled_at

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end; record when and how.

        The moment is taken from a pidfd, which wakes the waiter as soon as
        the process ends: ``Popen.wait(timeout)`` polls every 50 ms, too
        coarsely to tell whether a task's next attempt started before the
        previous one's process was gone.
        """
        ended = True
        try:
            pidfd = os.pidfd_open(self.process.process.pid)
        except ProcessLookupError:
            pass  # Already reaped.
        else:
            try:
                ended = bool(select.select([pidfd], [], [], timeout)[0])
            finally:
                os.close(pidfd)
        seen_at = time.time()

        # Raises subprocess.TimeoutExpired if the process still runs.
        self.exit_code = self.process.wait(1 if ended else 0)
        last_words = last_log_time(self.process.output())
        alive_at = max(self.signalled_at or -math.inf, last_words or -math.inf)
        self.death = Death(min(alive_at, seen_at), seen_at)
        return self.exit_code


class Cluster:
    """Worker processes started with the same options and timings.

    Worker ids are ``<name>-<n>``, never reused, as ``runworker`` requires of
    a restarted worker.
    """

    def __init__(
        self,
        start_worker: StartWorker,
        worker_env: dict[str, str],
        timings: Timings,
        *,
        name: str = "chaos",
        concurrency: int = 2,
        queues: str = "default",
        drain_timeout: float = 10.0,
        extra_args: Iterable[str] = (),
    ) -> None:
        # Every worker started from here on reads these settings.
        worker_env["TASKS_Q_TEST_SETTINGS"] = json.dumps(timings.settings())
        self.timings = timings
        self.name = name
        self.drain_timeout = drain_timeout
        self._start_worker = start_worker
        self._args = [
            *("--concurrency", str(concurrency)),
            *("--queues", queues),
            *("--poll-interval", "0.1"),
            *("--drain-timeout", str(drain_timeout)),
            *extra_args,
        ]
        self._lock = threading.Lock()
        self.workers: list[ChaosWorker] = []

    def start(self, count: int = 1) -> list[ChaosWorker]:
        """Start ``count`` workers and wait until each heartbeats."""
        started = [self.spawn() for _ in range(count)]
        self.wait_ready(started)
        return started

    def spawn(self) -> ChaosWorker:
        """Start one worker without waiting for it."""
        with self._lock:
            worker_id = f"{self.name}-{len(self.workers) + 1}"
            process = self._start_worker("--worker-id", worker_id, *self._args)
            worker = ChaosWorker(worker_id, process)
            self.workers.append(worker)
        return worker

    def wait_ready(self, workers: list[ChaosWorker], timeout: float = 60) -> None:
        ids = {worker.id for worker in workers}
        wait_until(
            lambda: ids <= self._heartbeating_ids(),
            timeout=timeout,
            interval=0.1,
            message=f"workers {sorted(ids)} to heartbeat",
        )

    def live(self) -> list[ChaosWorker]:
        with self._lock:
            return [worker for worker in self.workers if worker.exited_at is None]

    def ready(self) -> list[ChaosWorker]:
        """Live workers that heartbeat, hence handle signals: the worker
        installs its handlers before its heartbeat thread starts."""
        heartbeating = self._heartbeating_ids()
        return [worker for worker in self.live() if worker.id in heartbeating]

    def stop(self) -> dict[str, int]:
        """SIGTERM every live worker; return their exit codes by worker id.

        A replacement the fault injector spawned late may still be starting:
        before its handlers are installed, SIGTERM would kill it outright, so
        each worker is first waited for until it heartbeats.
        """
        live = self.live()
        self.wait_ready(live)
        for worker in live:
            worker.signal(signal.SIGTERM)
        return {
            worker.id: worker.wait_exit(self.drain_timeout + EXIT_GRACE)
            for worker in live
        }

    def died_unasked(self) -> list[ChaosWorker]:
        """Workers that exited though no fault and no stop ended them."""
        return [
            worker
            for worker in self.live()
            if worker.process.process.poll() is not None
        ]

    def deaths(self) -> dict[str, Death]:
        with self._lock:
            return {
                worker.id: worker.death
                for worker in self.workers
                if worker.death is not None
            }

    def logs(self) -> dict[str, str]:
        with self._lock:
            return {worker.id: worker.process.output() for worker in self.workers}

    def _heartbeating_ids(self) -> set[str]:
        with self._lock:
            ids = [worker.id for worker in self.workers]
        rows = Worker.objects.filter(pk__in=ids, last_heartbeat_at__gt=F("started_at"))
        return set(rows.values_list("id", flat=True))


# Faults


class FaultKind(StrEnum):
    KILL = "SIGKILL"
    TERMINATE = "SIGTERM"
    STOP = "SIGSTOP"
    CONNECTIONS = "pg_terminate_backend"


#: Faults after which an execution may overlap the next one: its worker (or
#: just its connection) was cut off while the execution ran on.
MAY_OVERLAP = frozenset({FaultKind.STOP, FaultKind.CONNECTIONS})


def fault_kinds() -> tuple[FaultKind, ...]:
    """The faults this database allows: SQLite has no server connections."""
    kinds = (FaultKind.KILL, FaultKind.TERMINATE, FaultKind.STOP)
    return (*kinds, FaultKind.CONNECTIONS) if on_postgresql() else kinds


@dataclass(frozen=True)
class Fault:
    """One injected fault; ``until`` is when it ended: the SIGCONT, or the
    reaping of the worker's process."""

    kind: FaultKind
    worker_id: str
    at: float
    until: float
    db_at: dt.datetime | None = None
    exit_code: int | None = None
    detail: str = ""

    def covers(self, execution: Execution, end: float) -> bool:
        """Whether this fault hit ``execution``'s worker while it ran."""
        return (
            self.worker_id == execution.worker_id
            and self.at - FAULT_SLACK <= end
            and self.until + FAULT_SLACK >= execution.started_at
        )


class FaultInjector:
    """Injects faults into a cluster's workers, one at a time.

    With ``replace``, a killed or terminated worker is replaced at once by a
    new one with a new id, so the cluster keeps its size.
    """

    def __init__(
        self,
        cluster: Cluster,
        kinds: Iterable[FaultKind] | None = None,
        *,
        replace: bool = True,
        seed: int | None = None,
        pause: tuple[float, float] = (0.2, 1.0),
        stop_for: tuple[float, float] = (0.3, 5.0),
    ) -> None:
        self.cluster = cluster
        self.kinds = tuple(kinds or fault_kinds())
        self.replace = replace
        self.seed = random.randrange(2**32) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.pause = pause
        self.stop_for = stop_for
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self._deck: list[FaultKind] = []
        self._stopping = threading.Event()
        self._stop_by = math.inf
        self._thread: threading.Thread | None = None

    def inject(self, kind: FaultKind, worker: ChaosWorker | None = None) -> Fault:
        """Apply one fault to ``worker``, by default a random ready one."""
        if worker is None:
            worker = self.rng.choice(self.cluster.ready())
        apply = {
            FaultKind.KILL: self._kill,
            FaultKind.TERMINATE: self._terminate,
            FaultKind.STOP: self._stop,
            FaultKind.CONNECTIONS: self._kill_connections,
        }[kind]
        fault = apply(worker)
        self.faults.append(fault)
        return fault

    def start(self) -> None:
        """Inject random faults in the background until ``stop()``."""
        self._thread = threading.Thread(target=self._run, name="chaos-injector")
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop once every kind was injected (waiting up to ``timeout``
        seconds for that) and the fault under way is over: a stopped worker
        is continued first."""
        self._stop_by = time.monotonic() + timeout
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        assert not self.errors, self.errors

    def _run(self) -> None:
        try:
            while True:
                # Once asked to stop, the missing kinds follow at once.
                self._stopping.wait(self.rng.uniform(*self.pause))
                if self._should_stop():
                    return
                ready = self.cluster.ready()
                if ready:
                    self.inject(self._next_kind(), self.rng.choice(ready))
        except Exception as exc:
            self.errors.append(f"The fault injector failed: {exc!r}")
            raise
        finally:
            connections.close_all()

    def _should_stop(self) -> bool:
        if not self._stopping.is_set():
            return False
        injected = {fault.kind for fault in self.faults}
        return injected >= set(self.kinds) or time.monotonic() > self._stop_by

    def _next_kind(self) -> FaultKind:
        """Deal the kinds in shuffled rounds, so that even a short run
        injects each of them once it has injected as many faults."""
        if not self._deck:
            self._deck = self.rng.sample(self.kinds, len(self.kinds))
        return self._deck.pop()

    def _kill(self, worker: ChaosWorker) -> Fault:
        db_at = database_now()
        at = worker.signal(signal.SIGKILL)
        exit_code = worker.wait_exit(EXIT_GRACE)

        self._replace()
        return Fault(FaultKind.KILL, worker.id, at, time.time(), db_at, exit_code)

    def _terminate(self, worker: ChaosWorker) -> Fault:
        at = worker.signal(signal.SIGTERM)
        try:
            exit_code: int | None = worker.wait_exit(
                self.cluster.drain_timeout + EXIT_GRACE
            )
            detail = ""
        except subprocess.TimeoutExpired:
            # Recorded as a fault with no exit code, which fails the run.
            exit_code, detail = None, "still running; killed"
            worker.signal(signal.SIGKILL)
            worker.wait_exit(EXIT_GRACE)

        self._replace()
        return Fault(
            FaultKind.TERMINATE, worker.id, at, time.time(), None, exit_code, detail
        )

    def _replace(self) -> None:
        if self.replace:
            self.cluster.spawn()

    def _stop(self, worker: ChaosWorker) -> Fault:
        stopped_for = self.rng.uniform(*self.stop_for)
        at = worker.signal(signal.SIGSTOP)
        time.sleep(stopped_for)
        worker.signal(signal.SIGCONT)
        return Fault(
            FaultKind.STOP, worker.id, at, time.time(), detail=f"{stopped_for:.1f}s"
        )

    def _kill_connections(self, worker: ChaosWorker) -> Fault:
        at = time.time()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [application_name(worker.id)],
            )
            terminated = sum(1 for (ok,) in cursor.fetchall() if ok)
        return Fault(
            FaultKind.CONNECTIONS,
            worker.id,
            at,
            at,
            detail=f"{terminated} backend(s)",
        )


def database_now() -> dt.datetime:
    """The database clock, which heartbeats and rescues are written with."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            (text,) = cursor.fetchone()
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        cursor.execute("SELECT statement_timestamp()")
        (now,) = cursor.fetchone()
        return now  # type: ignore[no-any-return]


# Load


@dataclass
class SendLog:
    """What a sender sent, and every send that raised."""

    task_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def send_probes(
    count: int, *, seconds: float = 0.0, queue: str | None = None
) -> list[str]:
    """Send ``count`` probes in one ``send_many``; return their task ids."""
    sender = probe.using(queue=queue) if queue else probe.using()
    handles = sender.send_many([((key, seconds), {}) for key in range(count)])
    return [handle.task_id for handle in handles]


def send_steadily(
    rate: float,
    duration: float,
    seconds_of: Callable[[int], float] = lambda key: 0.0,
    *,
    batch: int = 1,
) -> SendLog:
    """Send probes at ``rate`` per second for ``duration`` seconds.

    Each tick sends ``batch`` probes, with ``send()`` for one and
    ``send_many()`` for more; a ``TaskSendError`` is recorded, not raised.
    ``seconds_of(key)`` is how long the probe with that key works.
    """
    log = SendLog()
    started = time.monotonic()
    ticks = max(1, round(duration * rate / batch))

    for tick in range(ticks):
        keys = range(tick * batch, (tick + 1) * batch)
        try:
            if batch == 1:
                handles = [probe.send(keys[0], seconds_of(keys[0]))]
            else:
                handles = probe.send_many([((k, seconds_of(k)), {}) for k in keys])
            log.task_ids.extend(handle.task_id for handle in handles)
        except TaskSendError as exc:
            log.errors.append(f"{exc.code}: {exc.message}")

        next_tick = started + (tick + 1) * batch / rate
        time.sleep(max(0.0, next_tick - time.monotonic()))
    return log


def mixed_durations(seed: int, long_share: float = 0.1) -> Callable[[int], float]:
    """Mostly short probes, and a ``long_share`` of 0.5 to 1.5 s ones, so
    faults find tasks both starting and in the middle of their work."""
    rng = random.Random(seed)

    def seconds_of(key: int) -> float:
        if rng.random() < long_share:
            return round(rng.uniform(0.5, 1.5), 3)
        return round(rng.uniform(0.0, 0.03), 3)

    return seconds_of


def wait_settled(timeout: float) -> None:
    """Wait until no task is pending, claimed or running, or ``timeout``
    seconds pass; ``check_invariants`` reports any task that did not end."""
    deadline = time.monotonic() + timeout
    while Task.objects.exclude(status__in=FINISHED).exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


# Invariants


@dataclass
class Report:
    """What a scenario's run did, and the invariants it broke."""

    scenario: str
    tasks: int = 0
    executions: int = 0
    duplicates: int = 0
    explained: int = 0
    overlaps: int = 0
    lost: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    fenced_out: dict[str, int] = field(default_factory=dict)
    rescue_latency_max: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    fault_log: list[dict[str, Any]] = field(default_factory=list)

    def violate(self, message: str) -> None:
        self.violations.append(message)

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def assert_clean(self) -> None:
        shown = "\n".join(self.violations[:40])
        more = len(self.violations) - 40
        assert not self.violations, (
            f"{len(self.violations)} invariant violation(s) in {self.scenario}:\n"
            f"{shown}" + (f"\n... and {more} more" if more > 0 else "")
        )


def check_invariants(
    scenario: str,
    sent: Iterable[str],
    cluster: Cluster,
    faults: Iterable[Fault] = (),
    *,
    exactly_once: bool = False,
    final_exit_codes: Mapping[str, int] | None = None,
) -> Report:
    """Check what the database and the probes recorded against the invariants.

    With ``exactly_once`` (a run without faults) every task must have run
    once, in one attempt; otherwise every duplicate must be explained by a
    fault on the earlier execution's worker.
    """
    sent = list(sent)
    faults = list(faults)
    report = Report(scenario, tasks=len(sent))
    report.faults = dict(Counter(str(fault.kind) for fault in faults))
    report.fault_log = [asdict(fault) for fault in faults]

    rows = {str(row.pk): row for row in Task.objects.all()}
    attempts: dict[str, list[TaskAttempt]] = {}
    for attempt in TaskAttempt.objects.order_by("task_id", "number"):
        attempts.setdefault(str(attempt.task_id), []).append(attempt)
    executions = read_executions()
    deaths = cluster.deaths()
    report.executions = sum(len(runs) for runs in executions.values())

    _check_nothing_lost(report, sent, rows, executions)
    _check_terminal(report, rows, attempts, cluster.timings.max_crashes)
    _check_attempt_log(report, executions, attempts)
    _check_completing_lease(report, rows, executions)
    if exactly_once:
        _check_exactly_once(report, rows, attempts, executions)
    _check_duplicates(report, executions, faults, deaths)
    _check_exits(report, cluster, faults, final_exit_codes or {})
    _count_log_events(report, cluster.logs())
    if exactly_once and report.notes["rescues_logged"]:
        report.violate(
            f"{report.notes['rescues_logged']} rescue(s) were logged in a run "
            "without faults."
        )
    report.rescue_latency_max = _max_rescue_latency(faults, attempts)
    return report


def _check_nothing_lost(
    report: Report,
    sent: list[str],
    rows: Mapping[str, Task],
    executions: Mapping[str, list[Execution]],
) -> None:
    for task_id in sent:
        row = rows.get(task_id)
        if row is None:
            report.violate(f"Task {task_id} was sent but has no row.")
        elif row.status not in FINISHED:
            report.violate(
                f"Task {task_id} is still {row.status} (attempt {row.attempts}, "
                f"worker {row.worker_id or '-'})."
            )
        elif not executions.get(task_id):
            report.violate(f"Task {task_id} ended {row.status} but never ran.")
        else:
            continue
        report.lost += 1


def _check_terminal(
    report: Report,
    rows: Mapping[str, Task],
    attempts: Mapping[str, list[TaskAttempt]],
    max_crashes: int,
) -> None:
    """Every finished task completed, unless it crashed its workers to death."""
    for task_id, row in rows.items():
        if row.status == TaskStatus.COMPLETED or row.status not in FINISHED:
            continue
        crashed = [
            a for a in attempts.get(task_id, []) if a.outcome == AttemptOutcome.CRASHED
        ]
        if (
            row.status == TaskStatus.FAILED
            and row.error_code == ErrorCode.WORKER_CRASHED
            and row.crashes == len(crashed) >= max_crashes
        ):
            report.notes["crashed_out"] = report.notes.get("crashed_out", 0) + 1
            continue
        report.violate(
            f"Task {task_id} ended {row.status} with {row.error_code or 'no code'} "
            f"after {row.crashes} crash(es): {row.error_message[:200]}"
        )


def _check_attempt_log(
    report: Report,
    executions: Mapping[str, list[Execution]],
    attempts: Mapping[str, list[TaskAttempt]],
) -> None:
    """Each execution ran under an attempt the database recorded, with the
    same lease and worker, and no attempt ran twice."""
    for task_id, runs in executions.items():
        recorded = {attempt.number: attempt for attempt in attempts.get(task_id, [])}
        numbers = Counter(run.attempt for run in runs)
        for number, count in numbers.items():
            if count > 1:
                report.violate(f"Attempt {number} of task {task_id} ran {count} times.")

        for run in runs:
            attempt = recorded.get(run.attempt)
            if attempt is None:
                report.violate(
                    f"Task {task_id} ran attempt {run.attempt} on {run.worker_id}, "
                    "which has no attempt row."
                )
            elif (str(attempt.lease_token), attempt.worker_id) != (
                run.lease_token,
                run.worker_id,
            ):
                report.violate(
                    f"Attempt {run.attempt} of task {task_id} ran with lease "
                    f"{run.lease_token} on {run.worker_id}, but its row says "
                    f"{attempt.lease_token} on {attempt.worker_id}."
                )


def _check_completing_lease(
    report: Report,
    rows: Mapping[str, Task],
    executions: Mapping[str, list[Execution]],
) -> None:
    """A completed task's result came from its last attempt, which ran to its
    end: any later write of an older lease was fenced out."""
    for task_id, row in rows.items():
        if row.status != TaskStatus.COMPLETED:
            continue
        runs = {run.lease_token: run for run in executions.get(task_id, [])}
        run = runs.get(str(row.lease_token))
        if run is None:
            report.violate(
                f"Task {task_id} completed with lease {row.lease_token}, which "
                "none of its executions held."
            )
        elif run.finished_at is None or run.attempt != row.attempts:
            report.violate(
                f"Task {task_id} completed with the lease of attempt {run.attempt} "
                f"of {row.attempts}, whose execution "
                f"{'never finished' if run.finished_at is None else 'was not last'}."
            )


def _check_exactly_once(
    report: Report,
    rows: Mapping[str, Task],
    attempts: Mapping[str, list[TaskAttempt]],
    executions: Mapping[str, list[Execution]],
) -> None:
    for task_id, row in rows.items():
        runs = len(executions.get(task_id, []))
        outcomes = [attempt.outcome for attempt in attempts.get(task_id, [])]
        if (runs, row.attempts, row.crashes, outcomes) != (1, 1, 0, ["COMPLETED"]):
            report.violate(
                f"Task {task_id} ran {runs} time(s) in {row.attempts} attempt(s) "
                f"with {row.crashes} crash(es) and outcomes {outcomes}; "
                "without faults it must run exactly once."
            )


def _check_duplicates(
    report: Report,
    executions: Mapping[str, list[Execution]],
    faults: list[Fault],
    deaths: Mapping[str, Death],
) -> None:
    """Every run followed by another was hit by a fault on its worker, and
    overlaps the next run only if that fault left the worker running."""
    for task_id, runs in executions.items():
        for earlier, later in itertools.pairwise(runs):
            report.duplicates += 1
            ended_after, ended_before = earlier.end(deaths)
            covering = [f for f in faults if f.covers(earlier, ended_before)]
            if not covering:
                report.violate(
                    f"Task {task_id} ran again after attempt {earlier.attempt} on "
                    f"{earlier.worker_id} ({_span(earlier, ended_before)}), though "
                    "no fault hit that worker then."
                )
                continue
            report.explained += 1

            if later.started_at >= ended_before:
                continue
            if any(fault.kind in MAY_OVERLAP for fault in covering):
                report.overlaps += 1
            elif later.started_at < ended_after:
                kinds = sorted({str(fault.kind) for fault in covering})
                report.violate(
                    f"Task {task_id}: attempt {later.attempt} started "
                    f"{ended_after - later.started_at:.3f}s before attempt "
                    f"{earlier.attempt} on {earlier.worker_id} ended "
                    f"({_span(earlier, ended_after)}; faults {kinds})."
                )
            else:
                # Between the worker's last sign of life and its seen exit:
                # too close to call with the clocks at hand.
                report.notes["overlaps_within_clock_error"] = (
                    report.notes.get("overlaps_within_clock_error", 0) + 1
                )


def _span(execution: Execution, end: float) -> str:
    return f"ran {execution.started_at:.3f} to {end:.3f}"


def _check_exits(
    report: Report,
    cluster: Cluster,
    faults: list[Fault],
    final_exit_codes: Mapping[str, int],
) -> None:
    for fault in faults:
        if fault.kind == FaultKind.TERMINATE and fault.exit_code != 0:
            report.violate(
                f"Worker {fault.worker_id} exited with {fault.exit_code} after "
                f"SIGTERM {fault.detail}; a drained worker exits 0."
            )
    for worker_id, exit_code in final_exit_codes.items():
        if exit_code != 0:
            report.violate(f"Worker {worker_id} exited with {exit_code} at the end.")
    for worker in cluster.died_unasked():
        report.violate(f"Worker {worker.id} exited on its own.")


def _count_log_events(report: Report, logs: Mapping[str, str]) -> None:
    """Count fenced-out writes, and outcomes the workers failed to store."""
    fenced: Counter[str] = Counter()
    for text in logs.values():
        fenced.update(_FENCED_OUT.findall(text))
    report.fenced_out = dict(fenced)
    report.notes["rescues_logged"] = sum(
        text.count("was held by dead worker") for text in logs.values()
    )

    for worker_id, text in logs.items():
        for record in log_records(text):
            if "could not record task" in record or "gave up storing" in record:
                report.violate(
                    f"Worker {worker_id} lost an outcome: {record.splitlines()[0]}"
                )


def log_records(text: str) -> list[str]:
    """Split a worker's log into records, each with its traceback."""
    starts = [match.start() for match in _LOG_STAMP.finditer(text)]
    ends = [*starts[1:], len(text)] if starts else []
    return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def last_log_time(text: str) -> float | None:
    """When a worker wrote its last log record, by that record's timestamp."""
    stamps = _LOG_STAMP.findall(text)
    if not stamps:
        return None
    seconds, millis = stamps[-1]
    local = time.strptime(seconds, "%Y-%m-%d %H:%M:%S")
    return time.mktime(local) + int(millis) / 1000


def _max_rescue_latency(
    faults: list[Fault], attempts: Mapping[str, list[TaskAttempt]]
) -> float | None:
    """The longest wait, on the database clock, from a SIGKILL to the rescue
    of a task its worker was running."""
    crashed: dict[str, list[dt.datetime]] = {}
    for task_attempts in attempts.values():
        for attempt in task_attempts:
            if attempt.outcome == AttemptOutcome.CRASHED and attempt.finished_at:
                crashed.setdefault(attempt.worker_id, []).append(attempt.finished_at)

    latencies = [
        (rescued_at - fault.db_at).total_seconds()
        for fault in faults
        if fault.kind == FaultKind.KILL and fault.db_at is not None
        for rescued_at in crashed.get(fault.worker_id, [])
    ]
    return max(latencies, default=None)


# Summaries


def write_summary(record: Mapping[str, Any]) -> None:
    """Append ``record`` to the JSON-lines file that ``long_run.py`` reads."""
    path = os.environ.get(SUMMARY_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as summary:
            summary.write(json.dumps(record, default=str) + "\n")
