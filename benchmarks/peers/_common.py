"""What the peer drivers share: worker subprocesses, CPU and memory sampling,
PostgreSQL statistics, and the drain / pick-up / idle-memory procedures.

Each driver subclasses :class:`PeerSystem` and says how to start its workers,
how to send tasks through the peer's public API, and which SQL reads the
timestamps the peer stores. Everything measured here goes through a separate
monitoring connection (psycopg, or :mod:`sqlite3`), never through the peer's
own connections, so that its statements can be told apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import psutil

from benchmarks.harness import BenchDatabase, DrainResult, SendResult

REPO_DIR = Path(__file__).resolve().parents[2]

#: The driver hands the database to its worker subprocesses (and to the
#: peers' settings modules) as JSON in this environment variable.
DATABASE_ENV = "BENCH_PEER_DATABASE"

#: Every statement of the monitoring connection carries this comment, so that
#: it can be left out of the pg_stat_statements sum.
MONITOR_TAG = "/* bench-peers-monitor */"

POLL_SECONDS = 0.02


def database_to_env(database: BenchDatabase) -> str:
    return json.dumps({"vendor": database.vendor, "params": database.params})


def database_from_env() -> BenchDatabase:
    raw = os.environ.get(DATABASE_ENV)
    if not raw:
        raise RuntimeError(f"{DATABASE_ENV} is not set.")
    data = json.loads(raw)
    return BenchDatabase(vendor=data["vendor"], params=dict(data["params"]))


def require_postgres(database: BenchDatabase, name: str) -> None:
    if database.vendor != "postgresql":
        raise NotImplementedError(f"{name} needs PostgreSQL")


def postgres_conninfo(params: dict[str, str], **overrides: str) -> str:
    """A libpq connection string from ``BenchDatabase.params``."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo("", **{**params, **overrides})


def postgres_url(params: dict[str, str], driver: str = "postgresql") -> str:
    """A ``driver://user:password@host:port/dbname`` URL."""
    from urllib.parse import quote

    user = quote(params.get("user", ""), safe="")
    password = quote(params.get("password", ""), safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"{driver}://{credentials}{host}:{port}/{params['dbname']}"


def timestamp(value: datetime | str | float | None) -> float | None:
    """Seconds since the epoch of a stored timestamp (aware datetimes, ISO
    strings as SQLite returns them, or numbers)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # SQLite: Django stores UTC without an offset.
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# -- CPU and memory -----------------------------------------------------------


def _process_cpu(process: psutil.Process) -> float:
    """User + system CPU of ``process`` and of the children it has reaped."""
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0.0
    return float(
        times.user + times.system + times.children_user + times.children_system
    )


def tree(roots: Sequence[psutil.Process]) -> list[psutil.Process]:
    """``roots`` and all their living descendants."""
    found: dict[int, psutil.Process] = {}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    return list(found.values())


def tree_cpu_seconds(roots: Sequence[psutil.Process]) -> float:
    """CPU of the process trees under ``roots``: every living process, plus what
    its exited (and reaped) children used. A child that exits between two
    samples moves from the first term to its parent's second term."""
    return sum(_process_cpu(process) for process in tree(roots))


def tree_rss_mb(roots: Sequence[psutil.Process]) -> float:
    total = 0
    for process in tree(roots):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            total += process.memory_info().rss
    return total / 2**20


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL server process on this host (the postmaster's
    reaped children, the exited backends, included)."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "postgres":
            total += _process_cpu(process)
    return total


# -- worker subprocesses ------------------------------------------------------


@dataclass
class WorkerCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class Workers:
    """Worker subprocesses, each the leader of its own process group, with
    their output in a temporary log file."""

    def __init__(self, commands: Sequence[WorkerCommand], database: BenchDatabase):
        self._log_dir = tempfile.mkdtemp(prefix="bench-peers-")
        self.popens: list[subprocess.Popen[bytes]] = []
        self.processes: list[psutil.Process] = []
        self.started = time.monotonic()
        base_env = {
            **os.environ,
            DATABASE_ENV: database_to_env(database),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PYTHONUNBUFFERED": "1",
        }
        for number, command in enumerate(commands):
            log = open(Path(self._log_dir) / f"worker-{number}.log", "wb")  # noqa: SIM115
            popen = subprocess.Popen(
                command.argv,
                env={**base_env, **command.env},
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self.popens.append(popen)
            self.processes.append(psutil.Process(popen.pid))

    def check_alive(self) -> None:
        for popen in self.popens:
            if popen.poll() is not None:
                raise RuntimeError(
                    f"A worker exited with code {popen.returncode}: "
                    f"{popen.args!r}\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(Path(self._log_dir).glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.processes)

    def rss_mb(self) -> float:
        return tree_rss_mb(self.processes)

    def wait_idle(
        self,
        *,
        minimum: float = 1.5,
        window: float = 1.0,
        threshold: float = 0.05,
        timeout: float = 90.0,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """Wait until the workers are up (``ready()``, if given) and have used
        less than ``threshold`` of one core over the last ``window`` seconds,
        and at least ``minimum`` seconds have passed since they started."""
        deadline = self.started + timeout
        samples: list[tuple[float, float]] = []
        while True:
            self.check_alive()
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(
                    f"The workers did not go idle in {timeout} s.\n{self.log_tail()}"
                )
            samples.append((now, self.cpu_seconds()))
            old = [sample for sample in samples if sample[0] <= now - window]
            if old and now - self.started >= minimum:
                then, cpu_then = old[-1]
                busy = (samples[-1][1] - cpu_then) / (now - then)
                if busy < threshold and (ready is None or ready()):
                    return
            time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM each worker, then SIGKILL whatever of its group is left."""
        for popen in self.popens:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for popen in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(max(0.0, deadline - time.monotonic()))
        for popen in self.popens:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            if popen.poll() is None:
                popen.wait(5)

    def suspend(self) -> None:
        for process in tree(self.processes):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.suspend()

    def resume(self) -> None:
        for process in tree(self.processes):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


# -- monitoring connection ----------------------------------------------------


class Monitor:
    """A connection of the driver's own to the bench database: polls the
    peer's tables and reads PostgreSQL's statistics. It runs in autocommit,
    and counts its statements so that they can be subtracted."""

    def __init__(self, database: BenchDatabase):
        self.database = database
        self.statements = 0
        self._connection: Any
        if database.vendor == "postgresql":
            import psycopg

            self._connection = psycopg.connect(
                postgres_conninfo(database.params), autocommit=True
            )
        else:
            self._connection = sqlite3.connect(
                database.params["path"], timeout=30, isolation_level=None
            )

    @property
    def postgres(self) -> bool:
        return self.database.vendor == "postgresql"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # The tag keeps the monitor's statements out of the sums; sqlite3
        # takes "?" placeholders.
        sql = f"{sql} {MONITOR_TAG}" if self.postgres else sql.replace("%s", "?")
        self.statements += 1
        cursor = self._connection.execute(sql, params)
        rows = list(cursor.fetchall()) if cursor.description else []
        cursor.close()
        return rows

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self._connection.close()


class StatsWindow:
    """pg_stat_statements calls and pg_stat_database.xact_commit of the bench
    database over a window, without the monitoring connection's own.

    The commits before are read through a connection to the ``postgres``
    database before the monitoring connection opens, so that each of the
    latter's statements (autocommit: one commit each) can be subtracted.
    Statements are summed when the window ends (pg_stat_statements counts at
    once, and the monitor's own are tagged and left out); commits are read
    after the workers and every connection of the driver to the bench
    database have closed, since a backend reports its commits when it exits
    (or about once a second while it lives: commits of the workers' last
    second before the window may land in it). ``xact_commit`` counts every
    transaction PostgreSQL commits in the database, its own included: a
    listening backend delivering NOTIFYs to its client runs one, and so does
    autovacuum; these show as commits without a statement.
    """

    def __init__(self, database: BenchDatabase):
        import psycopg

        self.database = database
        self.dbname = database.params["dbname"]
        self._server = psycopg.connect(
            postgres_conninfo(database.params, dbname="postgres"), autocommit=True
        )
        self.commits_before = self._commits()
        self.monitor = Monitor(database)
        self.has_statements = bool(
            self.monitor.scalar(
                "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
            )
        )
        if self.has_statements:
            self.monitor.query(
                "SELECT pg_stat_statements_reset(0, d.oid, 0) FROM pg_database d"
                " WHERE d.datname = current_database()"
            )
        self.statements: int | None = None

    def _commits(self) -> int:
        row = self._server.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
            [self.dbname],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def end_statements(self) -> None:
        if not self.has_statements:
            return
        self.statements = int(
            self.monitor.scalar(
                "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = current_database()"
                " AND s.query NOT LIKE %s",
                [f"%{MONITOR_TAG}%"],
            )
        )
        if os.environ.get("BENCH_PEERS_DEBUG"):
            rows = self.monitor.query(
                "SELECT s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110)"
                " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = current_database() ORDER BY s.calls DESC"
                " LIMIT 15"
            )
            for calls, query in rows:
                print(f"{calls:8d}  {query}", file=sys.stderr)

    def end_commits(self) -> int:
        """Close the monitoring connection, wait for the bench database to have
        no backend left, and return the commits of the window."""
        own = self.monitor.statements
        self.monitor.close()
        wait_backends_gone(self._server, self.dbname)
        commits = self._commits() - self.commits_before - own
        self._server.close()
        return commits


def wait_backends_gone(
    server: Any, dbname: str, pids: Sequence[int] | None = None, timeout: float = 30
) -> None:
    """Wait until the backends ``pids`` (default: all) of ``dbname`` have
    exited, so that their statistics are reported."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    params: list[Any] = [dbname]
    if pids is not None:
        sql += " AND pid = ANY(%s)"
        params.append(list(pids))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = server.execute(sql, params).fetchone()
        if row is not None and row[0] == 0:
            break
        time.sleep(0.05)
    time.sleep(0.1)


# -- the measurements ---------------------------------------------------------


class PeerSystem:
    """The measurements of :class:`benchmarks.harness.System`, written once
    over a few hooks each peer fills in."""

    name: ClassVar[str]
    #: Shown in errors: "procrastinate needs PostgreSQL".
    needs_postgres: ClassVar[bool] = False
    #: Concurrency of the one worker of ``pickup_latency`` and
    #: ``idle_rss_mb``.
    idle_concurrency: ClassVar[int] = 4

    database: BenchDatabase

    # -- hooks ---------------------------------------------------------------

    def setup(self) -> None:
        """Configure the peer for ``self.database`` and create its tables."""
        raise NotImplementedError

    def worker_commands(self, processes: int, concurrency: int) -> list[WorkerCommand]:
        raise NotImplementedError

    def send_one(self) -> str:
        """Send one task, committed on its own; return its id."""
        raise NotImplementedError

    def send_many(self, count: int) -> None:
        """Send ``count`` tasks through the bulk API (or in one transaction)."""
        raise NotImplementedError

    def close_connections(self) -> None:
        """Close the connections the peer's API opened in this process."""

    def backlog(self, count: int, workers: Workers) -> None:
        """Commit the drain's backlog: ``send_many`` unless the peer needs
        another way to make ``count`` tasks appear at once."""
        self.send_many(count)

    #: SQL on the monitoring connection: number of tasks not finished yet.
    unfinished_sql: ClassVar[str]
    #: SQL: (first start, last finish) over all tasks.
    span_sql: ClassVar[str]
    #: SQL with one %s (task id): (started, finished) of that task, or no row.
    task_times_sql: ClassVar[str]

    def ready(self, monitor: Monitor) -> bool:
        """Whether the workers have registered (beyond being CPU-quiet)."""
        return True

    # -- System --------------------------------------------------------------

    def prepare(self, database: BenchDatabase) -> None:
        if self.needs_postgres:
            require_postgres(database, self.name)
        self.database = database
        self.setup()
        if database.vendor == "postgresql":
            monitor = Monitor(database)
            try:
                if monitor.scalar(
                    "SELECT count(*) FROM pg_available_extensions"
                    " WHERE name = 'pg_stat_statements'"
                ) and "pg_stat_statements" in str(
                    monitor.scalar("SHOW shared_preload_libraries")
                ):
                    monitor.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            finally:
                monitor.close()

    def send_one_at_a_time(self, count: int) -> SendResult:
        start = time.perf_counter()
        for _ in range(count):
            self.send_one()
        seconds = time.perf_counter() - start
        self.close_connections()
        return SendResult(count, seconds)

    def send_bulk(self, count: int) -> SendResult:
        start = time.perf_counter()
        self.send_many(count)
        seconds = time.perf_counter() - start
        self.close_connections()
        return SendResult(count, seconds)

    @contextlib.contextmanager
    def _workers(self, processes: int, concurrency: int) -> Iterator[Workers]:
        workers = Workers(self.worker_commands(processes, concurrency), self.database)
        try:
            yield workers
        finally:
            workers.stop()

    def _wait_idle(self, workers: Workers) -> None:
        monitor = Monitor(self.database)
        try:
            workers.wait_idle(ready=lambda: self.ready(monitor))
            pid = monitor.scalar("SELECT pg_backend_pid()") if monitor.postgres else 0
        finally:
            monitor.close()
        if self.database.vendor == "postgresql":
            import psycopg

            params = self.database.params
            with psycopg.connect(
                postgres_conninfo(params, dbname="postgres"), autocommit=True
            ) as server:
                wait_backends_gone(server, params["dbname"], [pid])

    def drain(self, count: int, *, processes: int, concurrency: int) -> DrainResult:
        postgres = self.database.vendor == "postgresql"
        timeout = 120 + count / 10
        window: StatsWindow | None = None
        with self._workers(processes, concurrency) as workers:
            self._wait_idle(workers)
            if postgres:
                window = StatsWindow(self.database)
                monitor = window.monitor
            else:
                monitor = Monitor(self.database)
            cpu_before = workers.cpu_seconds()
            pg_before = postgres_cpu_seconds() if postgres else 0.0
            sent_at = time.time()
            self.backlog(count, workers)
            deadline = time.monotonic() + timeout
            while (left := int(monitor.scalar(self.unfinished_sql))) > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{left} of {count} tasks unfinished after {timeout:.0f} s."
                        f"\n{workers.log_tail()}"
                    )
                workers.check_alive()
                time.sleep(POLL_SECONDS)
            polled_at = time.time()
            worker_cpu = workers.cpu_seconds() - cpu_before
            pg_cpu = postgres_cpu_seconds() - pg_before if postgres else None
            if window is not None:
                window.end_statements()
            first, last = monitor.query(self.span_sql)[0]
        self.close_connections()
        commits = None
        if window is not None:
            commits = window.end_commits()
        else:
            monitor.close()
        start, finish = timestamp(first), timestamp(last)
        if start is None or finish is None:
            start, finish = sent_at, polled_at
        return DrainResult(
            tasks=count,
            seconds=finish - start,
            worker_cpu_seconds=worker_cpu,
            postgres_cpu_seconds=pg_cpu,
            statements=window.statements if window is not None else None,
            commits=commits,
        )

    def pickup_latency(self, count: int) -> list[float]:
        latencies: list[float] = []
        with self._workers(1, self.idle_concurrency) as workers:
            self._wait_idle(workers)
            monitor = Monitor(self.database)
            try:
                for _ in range(count):
                    task_id = self.send_one()
                    sent = time.time()
                    deadline = time.monotonic() + 30
                    while True:
                        rows = monitor.query(self.task_times_sql, [task_id])
                        if rows and rows[0][1] is not None:
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(
                                f"Task {task_id} did not finish in 30 s."
                                f"\n{workers.log_tail()}"
                            )
                        time.sleep(0.002)
                    started = timestamp(rows[0][0])
                    assert started is not None
                    latencies.append(started - sent)
                    time.sleep(0.01)  # Let the worker go back to sleep.
            finally:
                monitor.close()
        self.close_connections()
        return latencies

    def idle_rss_mb(self) -> float:
        with self._workers(1, self.idle_concurrency) as workers:
            self._wait_idle(workers)
            time.sleep(3)
            workers.check_alive()
            return workers.rss_mb()


def python() -> str:
    """The interpreter the workers run with: the driver's own."""
    return sys.executable
