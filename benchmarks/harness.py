"""What every system in the throughput benchmark provides, and what it returns.

A *system* is one task queue driven through its public API: django-tasks-q or
a peer (``benchmarks/peers/``). Each measurement runs in a fresh subprocess
(``python -m benchmarks.measure SYSTEM MEASUREMENT ...``) with that system's
own Django settings, against an empty database of its own, and prints one
JSON object; ``benchmarks/run.py`` interleaves the systems over several
rounds and reports medians with their range.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class BenchDatabase:
    """The database one measurement runs on: a PostgreSQL database created for
    it, or a SQLite file."""

    vendor: str  # "postgresql" or "sqlite"
    #: PostgreSQL: libpq keywords (host, port, user, password, dbname).
    #: SQLite: {"path": ...}.
    params: dict[str, str]


@dataclass(frozen=True)
class SendResult:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


@dataclass(frozen=True)
class DrainResult:
    """A backlog of no-op tasks drained by the system's workers."""

    tasks: int
    #: From the first task's start to the last task's finish.
    seconds: float
    #: User + system CPU of the worker processes (and their children) over
    #: the drain.
    worker_cpu_seconds: float
    #: User + system CPU of all PostgreSQL server processes over the drain;
    #: ``None`` on SQLite.
    postgres_cpu_seconds: float | None
    #: Statements and commits PostgreSQL counted over the drain
    #: (pg_stat_statements calls / xact_commit of the database), if known.
    statements: int | None = None
    commits: int | None = None

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds

    @property
    def worker_cpu_ms_per_task(self) -> float:
        return 1000 * self.worker_cpu_seconds / self.tasks

    @property
    def postgres_cpu_ms_per_task(self) -> float | None:
        if self.postgres_cpu_seconds is None:
            return None
        return 1000 * self.postgres_cpu_seconds / self.tasks


class System(Protocol):
    """One task queue under test. Methods are called once per subprocess,
    after ``prepare()``; every figure is for no-op tasks."""

    #: Shown in the table: "django-tasks-q", "procrastinate", ...
    name: str

    def prepare(self, database: BenchDatabase) -> None:
        """Configure Django (or the system) for ``database`` and create the
        system's tables in it."""
        ...

    def send_one_at_a_time(self, count: int) -> SendResult:
        """Send ``count`` tasks from one thread, each committed on its own."""
        ...

    def send_bulk(self, count: int) -> SendResult:
        """Send ``count`` tasks with the system's bulk API (or, if it has
        none, in one transaction)."""
        ...

    def drain(self, count: int, *, processes: int, concurrency: int) -> DrainResult:
        """Start ``processes`` workers of ``concurrency`` each, let them go
        idle, commit a backlog of ``count`` tasks at once, and time until
        all have finished."""
        ...

    def pickup_latency(self, count: int) -> list[float]:
        """Seconds from each send's commit to its task's start, with one idle
        worker; tasks sent one at a time, each after the last finished."""
        ...

    def idle_rss_mb(self) -> float:
        """Resident memory in MB of one idle worker (concurrency 4, its child
        processes included) a few seconds after it started."""
        ...


# ---------------------------------------------------------------------------
# Utilities shared by the systems and the commands. Everything below is
# optional for a System to use; the names above are the contract.
# ---------------------------------------------------------------------------

#: The checkout: the parent of ``benchmarks/``.
REPO_DIR = Path(__file__).resolve().parent.parent

#: Every database the benchmarks create is named with this prefix, so that a
#: glance at the server (or a clean-up) tells them apart from real ones.
DATABASE_PREFIX = "bench_"

#: Appears in every query the harness itself sends while a drain runs, so
#: that the statement count can leave them out.
PROBE_MARKER = "/* bench-probe */"


def python_path_environment() -> dict[str, str]:
    """``PYTHONPATH`` that makes ``benchmarks``, ``django_tasks_q`` and the
    demo project importable from a subprocess."""
    paths = [str(REPO_DIR), str(REPO_DIR / "testproject")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(paths)}


# Databases ------------------------------------------------------------------


def server_params(url: str | None = None) -> dict[str, str]:
    """libpq keywords (host, port, user, password, dbname) of ``url``, by
    default ``DATABASE_URL``; raises ``RuntimeError`` when there is none."""
    url = url if url is not None else os.environ.get("DATABASE_URL", "")
    if not url:
        raise RuntimeError("DATABASE_URL is not set: no PostgreSQL server to use.")
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise RuntimeError(f"DATABASE_URL has scheme {parts.scheme!r}, not postgres.")
    return {
        "host": unquote(parts.hostname or "") or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "dbname": unquote(parts.path.lstrip("/")) or "postgres",
    }


def database_url(database: BenchDatabase) -> str:
    """A ``postgres://`` URL for a PostgreSQL ``database``."""
    if database.vendor != "postgresql":
        raise ValueError(f"A {database.vendor} database has no postgres:// URL.")
    from urllib.parse import quote

    params = database.params
    credentials = quote(params["user"], safe="")
    if params.get("password"):
        credentials += ":" + quote(params["password"], safe="")
    return (
        f"postgres://{credentials}@{params['host']}:{params['port']}"
        f"/{quote(params['dbname'], safe='')}"
    )


def connect(database: BenchDatabase | dict[str, str]) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to a PostgreSQL database (a
    ``BenchDatabase`` or libpq keywords)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = database.params if isinstance(database, BenchDatabase) else database
    return psycopg.connect(make_conninfo("", **params), autocommit=True)


def new_database_name(label: str) -> str:
    """``bench_<label>_<random>``: unique, so parallel runs never collide."""
    safe = "".join(c if c.isalnum() else "_" for c in label.lower())[:30]
    return f"{DATABASE_PREFIX}{safe}_{secrets.token_hex(4)}"


@contextlib.contextmanager
def fresh_postgres_database(label: str = "run") -> Iterator[BenchDatabase]:
    """Create an empty database on the server of ``DATABASE_URL``, yield it,
    and drop it afterwards (``WITH (FORCE)``, so that workers left behind do
    not keep it alive). Only ``bench_*`` names are ever created or dropped."""
    server = server_params()
    name = new_database_name(label)
    assert name.startswith(DATABASE_PREFIX)
    with connect(server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield BenchDatabase("postgresql", {**server, "dbname": name})
    finally:
        with connect(server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def temporary_sqlite_database() -> Iterator[BenchDatabase]:
    """A path for a SQLite file in a temporary folder, removed afterwards
    (with its ``-wal`` and ``-shm`` companions)."""
    with tempfile.TemporaryDirectory(prefix=DATABASE_PREFIX) as folder:
        yield BenchDatabase("sqlite", {"path": str(Path(folder) / "bench.sqlite3")})


def fresh_database(vendor: str, label: str = "run") -> Any:
    """``fresh_postgres_database`` or ``temporary_sqlite_database``, by
    ``vendor`` ("postgresql" or "sqlite"); a context manager either way."""
    if vendor == "postgresql":
        return fresh_postgres_database(label)
    if vendor == "sqlite":
        return temporary_sqlite_database()
    raise ValueError(f"Unknown database vendor {vendor!r}.")


@dataclass(frozen=True)
class ServerInfo:
    """What the header of the results says about the PostgreSQL server."""

    version: str
    fsync: str
    synchronous_commit: str
    pg_stat_statements: bool


def server_info(params: dict[str, str] | None = None) -> ServerInfo:
    """Read the server's version, ``fsync`` and ``synchronous_commit``, and
    whether ``pg_stat_statements`` is loaded (``shared_preload_libraries``)."""
    with connect(params or server_params()) as conn:

        def show(setting: str) -> str:
            row = conn.execute(f"SHOW {setting}").fetchone()
            return str(row[0]) if row else "?"

        libraries = show("shared_preload_libraries")
        return ServerInfo(
            version=show("server_version").split()[0],
            fsync=show("fsync"),
            synchronous_commit=show("synchronous_commit"),
            pg_stat_statements="pg_stat_statements" in libraries,
        )


# pg_stat_statements and pg_stat_database -------------------------------------


def enable_statement_counts(conn: psycopg.Connection[Any]) -> bool:
    """Create the ``pg_stat_statements`` extension in ``conn``'s database;
    ``False`` when the server has not loaded the library."""
    import psycopg

    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(f"SELECT 1 FROM pg_stat_statements LIMIT 1 {PROBE_MARKER}")
    except psycopg.Error:
        return False
    return True


def reset_statement_counts(conn: psycopg.Connection[Any]) -> None:
    """Forget the statements counted so far in ``conn``'s database only."""
    conn.execute(
        "SELECT pg_stat_statements_reset(0, "
        "(SELECT oid FROM pg_database WHERE datname = current_database()), 0) "
        + PROBE_MARKER
    )


def statement_count(conn: psycopg.Connection[Any]) -> int:
    """Top-level statements (``calls``, utility statements such as ``BEGIN``
    included, and deferred constraint checks, which run at commit) run in
    ``conn``'s database since the last reset, the harness's own probes left
    out."""
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) "
        "AND toplevel AND query NOT LIKE %s " + PROBE_MARKER,
        ["%bench-probe%"],
    ).fetchone()
    return int(row[0]) if row else 0


def commit_count(conn: psycopg.Connection[Any]) -> int:
    """``xact_commit`` of ``conn``'s database. A backend reports its counts at
    most once a second while busy and when it exits, so read this after the
    connections being counted have closed."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database "
        "WHERE datname = current_database() " + PROBE_MARKER
    ).fetchone()
    return int(row[0]) if row else 0


# CPU and memory of processes --------------------------------------------------


def _psutil() -> Any:
    """The ``psutil`` module (in the ``bench`` extra; imported late, and
    untyped, so that the type check of the lint environment needs none)."""
    return importlib.import_module("psutil")


def _own_cpu_seconds(process: Any) -> float:
    """User + system CPU of ``process`` and of its children that it has
    already waited for (Linux folds those into ``cutime``/``cstime``)."""
    times = process.cpu_times()
    return float(
        times.user
        + times.system
        + getattr(times, "children_user", 0.0)
        + getattr(times, "children_system", 0.0)
    )


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds used so far by the processes ``pids`` and all their live
    descendants (and the descendants they reaped). Call it while the
    processes still run: an exited process's time is no longer readable."""
    psutil = _psutil()

    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += _own_cpu_seconds(process)
    return total


def postgres_server_pids() -> list[int]:
    """The postmaster process(es) of this host: processes named ``postgres``
    whose parent is not. Their trees hold every backend and auxiliary
    process; backends that exited were reaped by the postmaster, so their
    CPU stays counted in its children's times."""
    psutil = _psutil()

    roots = []
    for process in psutil.process_iter(["name", "ppid"]):
        if process.info["name"] not in {"postgres", "postmaster"}:
            continue
        try:
            parent = psutil.Process(process.info["ppid"])
            parent_name = parent.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            parent_name = ""
        if parent_name not in {"postgres", "postmaster"}:
            roots.append(process.pid)
    return roots


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by all PostgreSQL server processes of this
    host, or ``None`` when none is found (a remote server)."""
    roots = postgres_server_pids()
    return tree_cpu_seconds(roots) if roots else None


def tree_rss_mb(pid: int) -> float:
    """Resident memory in MB (10**6 bytes) of ``pid`` and its descendants."""
    psutil = _psutil()

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 1e6


class DrainMeter:
    """The CPU, statements and commits of a drain, measured the same way for
    every system.

    Usage, with the workers started and idle::

        meter = DrainMeter(database, worker_pids)
        meter.start()            # before the backlog is committed
        ...send the backlog...
        meter.wait_for(sql, count)  # or the system's own wait
        meter.stop()             # as soon as the work is done, workers alive
        ...stop the workers, close the Django connections...
        result = meter.result(tasks, seconds)

    Worker CPU covers ``worker_pids`` and their children; PostgreSQL CPU
    covers every server process of the host, so the backlog's INSERT and
    other clients of the server count too (run on a quiet machine).
    Statements and commits are those of the benchmark database only; the
    meter's own queries are left out of both.
    """

    def __init__(self, database: BenchDatabase, worker_pids: Sequence[int]) -> None:
        self.database = database
        self.worker_pids = list(worker_pids)
        self._postgres = database.vendor == "postgresql"
        self._counting_statements = False
        self._commits_before = 0
        self._probe_commits = 0
        self._cpu_before = (0.0, 0.0)
        self._cpu_used: tuple[float, float | None] = (0.0, None)

    def start(self) -> None:
        if self._postgres:
            with connect(self.database) as conn:
                self._counting_statements = enable_statement_counts(conn)
                if self._counting_statements:
                    reset_statement_counts(conn)
                # This connection's own transactions are reported when it
                # closes, after this read: count them as probes.
                self._commits_before = commit_count(conn)
                self._probe_commits += 2
        self._cpu_before = (
            tree_cpu_seconds(self.worker_pids),
            postgres_cpu_seconds() or 0.0 if self._postgres else 0.0,
        )

    def wait_for(self, sql: str, count: int, *, timeout: float = 600.0) -> None:
        """Poll ``sql`` (one row, one integer) every 50 ms until it reaches
        ``count``; ``TimeoutError`` after ``timeout`` seconds. Works on both
        databases; the polls are left out of the counts."""
        deadline = time.monotonic() + timeout
        if self._postgres:
            with connect(self.database) as conn:
                while True:
                    row = conn.execute(f"{sql} {PROBE_MARKER}").fetchone()
                    self._probe_commits += 1
                    if row and int(row[0]) >= count:
                        return
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        else:
            import sqlite3

            with contextlib.closing(
                sqlite3.connect(self.database.params["path"], timeout=30)
            ) as conn:
                while True:
                    row = conn.execute(sql).fetchone()
                    if row and int(row[0]) >= count:
                        return
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        raise TimeoutError(f"{count} tasks were not done after {timeout:.0f} s.")

    def stop(self) -> None:
        workers = tree_cpu_seconds(self.worker_pids) - self._cpu_before[0]
        postgres = None
        if self._postgres:
            now = postgres_cpu_seconds()
            postgres = None if now is None else now - self._cpu_before[1]
        self._cpu_used = (workers, postgres)

    def result(self, tasks: int, seconds: float) -> DrainResult:
        """The drain's figures; call once the workers have exited and the
        caller's own connections to the database are closed."""
        statements = commits = None
        if self._postgres:
            time.sleep(0.5)  # Exiting backends report their counts.
            with connect(self.database) as conn:
                if self._counting_statements:
                    statements = statement_count(conn)
                commits = commit_count(conn) - self._commits_before
                commits = max(0, commits - self._probe_commits)
        return DrainResult(
            tasks=tasks,
            seconds=seconds,
            worker_cpu_seconds=self._cpu_used[0],
            postgres_cpu_seconds=self._cpu_used[1],
            statements=statements,
            commits=commits,
        )


# Statistics -------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def minimum(values: Sequence[float]) -> float:
    return float(min(values))


def maximum(values: Sequence[float]) -> float:
    return float(max(values))


def quantile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.95 for p95) of ``values``, interpolated
    linearly between the two nearest ranks."""
    if not values:
        raise ValueError("No values.")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values``, keyed by those names."""
    return {
        "p50": quantile(values, 0.50),
        "p95": quantile(values, 0.95),
        "p99": quantile(values, 0.99),
        "max": maximum(values),
    }
