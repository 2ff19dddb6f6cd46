"""The tables, the targets, the docs page and the chart of a benchmark run.

``benchmarks/run.py`` collects, per system and round, the JSON results of
``benchmarks.measure`` into a ``Results``; this module turns them into
figures. A ``Row`` reads one figure out of one kind of run (for example the
worker CPU per task out of the 1 x 4 drain); a ``Cell`` holds that figure's
per-round values for one system and prints them as ``median (min-max)``, or
``n/a (reason)`` when every round failed. ``report()`` renders one
database's tables as Markdown, which reads as well in a terminal;
``write_docs()`` and ``draw_chart()`` update ``docs/benchmarks.md`` and
``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO_DIR,
    maximum,
    median,
    minimum,
    quantile,
    server_info,
)

OURS = "django-tasks-q"
DOCS_PAGE = REPO_DIR / "docs" / "benchmarks.md"
CHART = REPO_DIR / "docs" / "benchmarks.png"
RESULTS_START = "<!-- benchmark-results:start -->"
RESULTS_END = "<!-- benchmark-results:end -->"


# What the table shows -------------------------------------------------------------

DRAINS = ["drain-1x4", "drain-1x8", "drain-2x4", "drain-4x4"]


def _field(name: str) -> Callable[[dict[str, Any]], float | None]:
    def read(result: dict[str, Any]) -> float | None:
        value = result.get(name)
        return None if value is None else float(value)

    return read


def _latency(series: str, fraction: float) -> Callable[[dict[str, Any]], float | None]:
    def read(result: dict[str, Any]) -> float | None:
        values = result.get(series)
        return 1000 * quantile(values, fraction) if values else None

    return read


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure read from the results of one run."""

    label: str
    unit: str
    run: str
    value: Callable[[dict[str, Any]], float | None]
    target: str = ""
    decimals: int = 0
    #: Only django-tasks-q reports it (the protocol has no such figure).
    ours_only: bool = False


ROWS = [
    Row("send one at a time", "tasks/s", "send-one", _field("per_second"), "≥ 2,000"),
    Row("bulk send", "rows/s", "send-bulk", _field("per_second"), "≥ 25,000"),
    Row(
        "drain, 1 process x 4",
        "tasks/s",
        "drain-1x4",
        _field("tasks_per_second"),
        "≥ 1,500; ratios below",
    ),
    Row("drain, 1 process x 8", "tasks/s", "drain-1x8", _field("tasks_per_second")),
    Row("drain, 2 processes x 4", "tasks/s", "drain-2x4", _field("tasks_per_second")),
    Row("drain, 4 processes x 4", "tasks/s", "drain-4x4", _field("tasks_per_second")),
    Row(
        "worker CPU, 1 x 4",
        "ms/task",
        "drain-1x4",
        _field("worker_cpu_ms_per_task"),
        "≤ 0.6",
        3,
    ),
    Row(
        "PostgreSQL CPU, 1 x 4",
        "ms/task",
        "drain-1x4",
        _field("postgres_cpu_ms_per_task"),
        "≤ 0.5",
        3,
    ),
    Row(
        "PostgreSQL CPU, 2 x 4",
        "ms/task",
        "drain-2x4",
        _field("postgres_cpu_ms_per_task"),
        "≤ 0.5",
        3,
    ),
    Row(
        "PostgreSQL CPU, 4 x 4",
        "ms/task",
        "drain-4x4",
        _field("postgres_cpu_ms_per_task"),
        "≤ 0.5",
        3,
    ),
    Row(
        "statements, 1 x 4",
        "per task",
        "drain-1x4",
        _field("statements_per_task"),
        decimals=2,
    ),
    Row("commits, 1 x 4", "per task", "drain-1x4", _field("commits_per_task"), "", 2),
    Row(
        "drain, 1 x 8, batched completions",
        "tasks/s",
        "drain-1x8-batched",
        _field("tasks_per_second"),
        "≥ 1,500",
        ours_only=True,
    ),
    Row(
        "worker CPU, 1 x 8 batched",
        "ms/task",
        "drain-1x8-batched",
        _field("worker_cpu_ms_per_task"),
        "≤ 0.6",
        3,
        ours_only=True,
    ),
    Row(
        "PostgreSQL CPU, 1 x 8 batched",
        "ms/task",
        "drain-1x8-batched",
        _field("postgres_cpu_ms_per_task"),
        "≤ 0.5",
        3,
        ours_only=True,
    ),
    Row(
        "commits, 1 x 8 batched",
        "per task",
        "drain-1x8-batched",
        _field("commits_per_task"),
        decimals=2,
        ours_only=True,
    ),
    Row("pick-up latency p50", "ms", "latency", _latency("pickup", 0.5), "", 2),
    Row("pick-up latency p95", "ms", "latency", _latency("pickup", 0.95), "", 2),
    Row(
        "finish-to-get p50",
        "ms",
        "latency",
        _latency("result", 0.5),
        decimals=2,
        ours_only=True,
    ),
    Row("idle worker RSS", "MB", "idle-rss", _field("mb"), "≤ 60, ≤ smallest peer", 1),
]

#: Drain ratios django-tasks-q / peer that the 1 x 4 drain must reach.
RATIO_TARGETS = {
    "django-tasks-db": 5.0,
    "procrastinate": 2.5,
    "django-q2": 3.5,
    "horsies": 10.0,
}


# Collected results --------------------------------------------------------------


@dataclass
class Cell:
    """The per-round values of one figure for one system."""

    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return median(self.values) if self.values else None

    def text(self, decimals: int) -> str:
        if not self.values:
            reason = self.errors[-1] if self.errors else "not measured"
            return f"n/a ({shorten(reason)})"
        middle = _number(median(self.values), decimals)
        if len(self.values) == 1:
            text = middle
        else:
            low = _number(minimum(self.values), decimals)
            high = _number(maximum(self.values), decimals)
            text = f"{middle} ({low}-{high})"
        if self.errors:
            text += f" [{len(self.errors)} failed]"
        return text


@dataclass
class Results:
    database: str
    systems: list[str]
    rounds: int
    #: (system, run key) -> the JSON results of the successful rounds.
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    pgbench: dict[int, list[float]] = field(default_factory=dict)
    pgbench_errors: list[str] = field(default_factory=list)
    claim_scale: dict[str, Any] | None = None
    claim_scale_error: str | None = None

    def measured(self) -> list[str]:
        """The systems with at least one successful run."""
        return [s for s in self.systems if any(k[0] == s for k in self.runs)]

    def missing_reason(self, system: str) -> str | None:
        """Why ``system`` has no result at all (its last error), or ``None``
        if it has some."""
        if any(key[0] == system for key in self.runs):
            return None
        errors = [
            e for key, found in self.errors.items() if key[0] == system for e in found
        ]
        return shorten(errors[-1], 120) if errors else "not run"

    def cell(self, system: str, row: Row) -> Cell:
        cell = Cell(errors=list(self.errors.get((system, row.run), [])))
        for result in self.runs.get((system, row.run), []):
            value = row.value(result)
            if value is not None:
                cell.values.append(value)
        if not cell.values and not cell.errors and self.runs.get((system, row.run)):
            cell.errors.append("not reported")
        return cell


# Reporting ----------------------------------------------------------------------


def header(options: argparse.Namespace, postgres: bool) -> str:
    import django

    lines = [f"Benchmark run of {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"]
    if postgres:
        try:
            info = server_info()
            lines.append(
                f"- PostgreSQL {info.version}: fsync={info.fsync}, "
                f"synchronous_commit={info.synchronous_commit}, pg_stat_statements "
                f"{'loaded' if info.pg_stat_statements else 'not loaded (n/a)'}"
            )
        except Exception as exc:
            lines.append(f"- PostgreSQL: n/a ({exc})")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines += [
        f"- {os.cpu_count()} CPUs ({platform.machine()}), load average {load} "
        "at the start",
        f"- Python {platform.python_version()}, Django {django.get_version()}",
        f"- {options.rounds} round(s); {options.tasks:,} tasks per drain, "
        f"{options.send_one:,} single sends, {options.bulk:,} bulk rows, "
        f"{options.latency_tasks} latency sends",
    ]
    return "\n".join(lines) + "\n"


def report(results: Results) -> str:
    """The tables of one database, as Markdown (readable as plain text). A
    system with no figure at all gets no column, only a line saying why."""
    missing = {
        system: reason
        for system in results.systems
        if (reason := results.missing_reason(system)) is not None
    }
    peers = [s for s in results.systems if s != OURS and s not in missing]
    ours = OURS in results.systems and OURS not in missing
    columns = ["Measurement", "Target"]
    if ours:
        columns.append(OURS)
    for peer in peers:
        columns.append(peer)
        if ours:
            columns.append(f"ours/{peer}")

    rows = []
    for row in ROWS:
        if row.ours_only and not ours:
            continue
        line = [f"{row.label} ({row.unit})", row.target]
        our_cell = results.cell(OURS, row) if ours else Cell()
        if ours:
            line.append(our_cell.text(row.decimals))
        for peer in peers:
            cell = results.cell(peer, row)
            line.append("-" if row.ours_only else cell.text(row.decimals))
            if ours:
                line.append(_ratio(our_cell.median, cell.median))
        rows.append(line)

    parts = [f"### {_database_title(results.database)}", _markdown(columns, rows)]
    if missing:
        parts.append(
            "\n".join(f"- {name}: n/a ({reason})" for name, reason in missing.items())
        )
    if results.database == "postgresql":
        parts.append(_pgbench_text(results))
    if ours:
        parts.append(_markdown(["Target", "Measured", "Met"], _targets(results)))
    if results.claim_scale or results.claim_scale_error:
        parts.append(_claim_text(results))
    return "\n\n".join(part for part in parts if part) + "\n"


def _database_title(database: str) -> str:
    return "PostgreSQL" if database == "postgresql" else "SQLite"


def _pgbench_text(results: Results) -> str:
    if not results.pgbench:
        reason = results.pgbench_errors[-1] if results.pgbench_errors else "not run"
        return f"pgbench lifecycle: n/a ({shorten(reason)})"
    parts = []
    for clients, values in sorted(results.pgbench.items()):
        cell = Cell(values=values)
        parts.append(f"{clients} client(s) {cell.text(0)} jobs/s")
    return (
        "Database limit, pgbench insert/claim/complete lifecycle "
        "(3 commits per job): " + "; ".join(parts) + "."
    )


def _claim_text(results: Results) -> str:
    scale = results.claim_scale
    if scale is None:
        return f"Claim at scale: n/a ({shorten(results.claim_scale_error or '')})"
    return (
        f"Claim at scale ({scale['pending']:,} pending, {scale['finished']:,} "
        f"finished, {scale['claims']} claims of 4): p50 {scale['p50_ms']:.3f} ms, "
        f"p95 {scale['p95_ms']:.3f} ms, p99 {scale['p99_ms']:.3f} ms.\n\n"
        f"```text\n{scale['explain']}\n```"
    )


def _targets(results: Results) -> list[list[str]]:
    """Each target, the measured figure, and whether it is met."""

    def figure(run: str, label: str) -> float | None:
        row = next(r for r in ROWS if r.run == run and r.label.startswith(label))
        return results.cell(OURS, row).median

    def check(
        name: str, value: float | None, ok: Callable[[float], bool], text: str
    ) -> list[str]:
        if value is None:
            return [name, "n/a", "?"]
        return [name, text.format(value), "yes" if ok(value) else "NO"]

    drain_row = next(r for r in ROWS if r.run == "drain-1x4")
    drain = results.cell(OURS, drain_row).median
    lines = [
        check(
            "one runworker (1 x 4) ≥ 1,500 tasks/s",
            drain,
            lambda v: v >= 1500,
            "{:,.0f} tasks/s",
        ),
    ]
    for peer, wanted in RATIO_TARGETS.items():
        name = f"drain ≥ {wanted:g}x {peer}"
        if peer not in results.systems:
            lines.append([name, "not run", "?"])
            continue
        theirs = results.cell(peer, drain_row).median
        ratio = None if drain is None or not theirs else drain / theirs
        lines.append(check(name, ratio, _at_least(wanted), "{:.2f}x"))
    lines += [
        check(
            "worker CPU ≤ 0.6 ms/task",
            figure("drain-1x4", "worker"),
            lambda v: v <= 0.6,
            "{:.3f} ms",
        ),
        check(
            "PostgreSQL CPU ≤ 0.5 ms/task",
            figure("drain-1x4", "PostgreSQL"),
            lambda v: v <= 0.5,
            "{:.3f} ms",
        ),
    ]
    lines += _scale_out_targets(figure, check)
    lines += _batched_targets(results, check)
    lines += [
        check(
            "send one at a time ≥ 2,000/s",
            figure("send-one", "send"),
            lambda v: v >= 2000,
            "{:,.0f}/s",
        ),
        check(
            "send_many ≥ 25,000 rows/s",
            figure("send-bulk", "bulk"),
            lambda v: v >= 25000,
            "{:,.0f} rows/s",
        ),
    ]
    scale = results.claim_scale
    if scale is None:
        lines.append(["claim p95 < 2 ms at 1M/5M", "not run (--claim-scale)", "?"])
    else:
        where = f" at {scale['pending']:,}/{scale['finished']:,}"
        lines.append(
            check(
                "claim p95 < 2 ms at 1M/5M",
                float(scale["p95_ms"]),
                lambda v: v < 2,
                "{:.3f} ms" + where,
            )
        )
    rss_row = ROWS[-1]
    rss = results.cell(OURS, rss_row).median
    peer_rss = [
        value
        for peer in results.systems
        if peer != OURS and (value := results.cell(peer, rss_row).median) is not None
    ]
    lines.append(check("idle RSS ≤ 60 MB", rss, lambda v: v <= 60, "{:.1f} MB"))
    if peer_rss:
        smallest = min(peer_rss)
        lines.append(
            check(
                f"idle RSS ≤ smallest peer ({smallest:.1f} MB)",
                rss,
                lambda v: v <= smallest,
                "{:.1f} MB",
            )
        )
    else:
        lines.append(["idle RSS ≤ smallest peer", "no peer measured", "?"])
    return lines


def _scale_out_targets(
    figure: Callable[[str, str], float | None],
    check: Callable[[str, float | None, Callable[[float], bool], str], list[str]],
) -> list[list[str]]:
    """More worker processes must drain no slower than fewer, and keep
    PostgreSQL's CPU per task within the same bound."""
    lines = []
    for more, fewer in ((2, 1), (4, 2)):
        ours = figure(f"drain-{more}x4", "drain")
        theirs = figure(f"drain-{fewer}x4", "drain")
        ratio = None if ours is None or not theirs else ours / theirs
        name = f"drain {more} x 4 ≥ {fewer} x 4"
        lines.append(check(name, ratio, _at_least(1), "{:.2f}x"))
    for processes in (2, 4):
        lines.append(
            check(
                f"PostgreSQL CPU, {processes} x 4 ≤ 0.5 ms/task",
                figure(f"drain-{processes}x4", "PostgreSQL"),
                lambda v: v <= 0.5,
                "{:.3f} ms",
            )
        )
    return lines


def _batched_targets(
    results: Results,
    check: Callable[[str, float | None, Callable[[float], bool], str], list[str]],
) -> list[list[str]]:
    """The throughput targets again, for django-tasks-q with batched
    completions at 1 x 8, against each peer's own 1 x 8 drain."""

    def ours(label: str) -> float | None:
        batched = (r for r in ROWS if r.run == "drain-1x8-batched")
        row = next(r for r in batched if r.label.startswith(label))
        return results.cell(OURS, row).median

    drain = ours("drain")
    lines = [
        check(
            "1 x 8, batched completions ≥ 1,500 tasks/s",
            drain,
            lambda v: v >= 1500,
            "{:,.0f} tasks/s",
        )
    ]
    peer_row = next(r for r in ROWS if r.run == "drain-1x8")
    for peer, wanted in RATIO_TARGETS.items():
        if peer not in results.systems:
            continue
        theirs = results.cell(peer, peer_row).median
        ratio = None if drain is None or not theirs else drain / theirs
        lines.append(
            check(
                f"1 x 8 batched ≥ {wanted:g}x {peer}'s 1 x 8",
                ratio,
                _at_least(wanted),
                "{:.2f}x",
            )
        )
    lines += [
        check(
            "worker CPU, 1 x 8 batched ≤ 0.6 ms/task",
            ours("worker"),
            lambda v: v <= 0.6,
            "{:.3f} ms",
        ),
        check(
            "PostgreSQL CPU, 1 x 8 batched ≤ 0.5 ms/task",
            ours("PostgreSQL"),
            lambda v: v <= 0.5,
            "{:.3f} ms",
        ),
    ]
    return lines


def _at_least(wanted: float) -> Callable[[float], bool]:
    return lambda value: value >= wanted


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def _number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def shorten(text: str, length: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 3] + "..."


def _markdown(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    table = [list(columns), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]

    def render(line: list[str]) -> str:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(table[0]), rule, *(render(line) for line in table[1:])])


# Documentation ------------------------------------------------------------------

_PAGE = f"""# Benchmarks

How fast django-tasks-q stores, claims and runs tasks, next to other
database-backed task queues for Python, measured by one command on one
machine. The figures below are only as good as that machine: run the
command on yours before drawing conclusions.

## The command

```shell
DATABASE_URL=postgres://user:password@127.0.0.1:5432/postgres \\
    python -m benchmarks.run --rounds 3 --write-docs
```

`tox -e bench -- --rounds 3` does the same in an environment with every peer
installed (the `bench` extra). The role in `DATABASE_URL` must be allowed to
create databases: every measurement runs in a fresh `bench_*` database that
is dropped afterwards. `--systems django-tasks-q procrastinate` limits the
run to some systems, `--database sqlite` (or `both`) measures on SQLite,
and `--claim-scale` adds the claim on a table of 6 million rows (several
minutes). `--save results.json` keeps every raw figure, and
`--load results.json --write-docs` reports them again without measuring.
`python -m benchmarks.run --help` lists every option.

Run it on a quiet machine: the PostgreSQL CPU figure counts every server
process of the host, and the peers' workers share the cores with the
database just as django-tasks-q's do.

## The method

Every system is driven through its public API, with no-op tasks, so that
only the cost of the queue itself shows. Each measurement runs in a process
of its own (`python -m benchmarks.measure SYSTEM MEASUREMENT`), on an empty
database, with that system's Django settings. Each round runs every
measurement for every system, one system after the other in an order that
rotates from round to round; the table reports the median of the rounds and
their range.

- **Send one at a time**: tasks sent from one thread, each in its own
  transaction (tasks/s).
- **Bulk send**: one call of the system's bulk API, or one transaction where
  it has none (rows/s).
- **Drain**: workers are started and left idle, a backlog of no-op tasks is
  committed in one go, and the time runs from the first task's start to the
  last task's finish, as stored by the system. Configurations: 1 worker
  process with 4 then 8 concurrent slots, 2 and 4 processes of 4.
- **CPU per task** (each drain): user + system CPU of the worker processes
  and their children, and of every PostgreSQL server process of the host,
  over the drain, divided by the tasks. The PostgreSQL figure includes the
  backlog's INSERT and anything else the server did meanwhile.
- **Statements and commits per task** (1 x 4 drain): `pg_stat_statements`
  calls and `pg_stat_database.xact_commit` of the benchmark database. A
  commit counts every transaction, read-only ones included (a backend that
  listens for notifications runs one to read them).
- **Pick-up latency**: one idle worker, tasks sent one at a time, each after
  the last finished; from the send's return to the task's start. For
  django-tasks-q, also from the stored finish to the return of `get()`.
- **Idle worker RSS**: resident memory of one worker (concurrency 4, its
  child processes included) a few seconds after it started.
- **Database limit**: `pgbench` replays a bare insert / claim (`SKIP LOCKED`)
  / complete lifecycle, three commits per job, with 1 and 4 clients, on the
  same server in the same run: no queue that commits each step can beat it.
- **Claim at scale** (`--claim-scale`): django-tasks-q's claim of 4 tasks
  among 1,000,000 pending and 5,000,000 completed ones, with its plan.

## Reading the table

Each cell is `median (min-max)` over the rounds; `n/a (reason)` means the
system is not installed or the measurement failed. `ours/peer` divides
django-tasks-q's median by the peer's: above 1 is better for throughput,
below 1 is better for CPU, latency and memory. The targets are those the
project set itself for this machine; the second table says which are met.

## Results

{RESULTS_START}
{RESULTS_END}
"""


def write_docs(text: str) -> None:
    """Put ``text`` between the result markers of ``docs/benchmarks.md``,
    creating the page first if it does not exist."""
    page = DOCS_PAGE.read_text() if DOCS_PAGE.exists() else _PAGE
    if RESULTS_START not in page or RESULTS_END not in page:
        page = page.rstrip() + f"\n\n## Results\n\n{RESULTS_START}\n{RESULTS_END}\n"
    before, rest = page.split(RESULTS_START, 1)
    _, after = rest.split(RESULTS_END, 1)
    body = f"![Drain throughput and CPU per task]({CHART.name})\n\n{text.strip()}"
    DOCS_PAGE.write_text(f"{before}{RESULTS_START}\n{body}\n{RESULTS_END}{after}")


def draw_chart(results: Results, path: Path) -> None:
    """Drain tasks/s per system (bars, min-max whiskers), and worker vs
    PostgreSQL CPU per task in the 1 x 4 drain."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")

    systems = results.measured()
    if not systems:
        return
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(DRAINS)
    for index, key in enumerate(DRAINS):
        row = next(r for r in ROWS if r.run == key)
        medians, low, high = [], [], []
        for system in systems:
            values = results.cell(system, row).values
            middle = median(values) if values else 0.0
            medians.append(middle)
            low.append(middle - minimum(values) if values else 0.0)
            high.append(maximum(values) - middle if values else 0.0)
        positions = [
            i + (index - (len(DRAINS) - 1) / 2) * width for i in range(len(systems))
        ]
        left.bar(
            positions,
            medians,
            width,
            yerr=[low, high],
            capsize=3,
            label=row.label.removeprefix("drain, "),
        )
    left.set_xticks(range(len(systems)), systems, rotation=15)
    left.set_ylabel("tasks/s (median, min-max)")
    left.set_title(f"Drain of no-op tasks ({_database_title(results.database)})")
    left.legend(fontsize="small")

    worker_row = next(r for r in ROWS if r.label.startswith("worker CPU"))
    pg_row = next(r for r in ROWS if r.label.startswith("PostgreSQL CPU"))
    for offset, row, label in (
        (-0.2, worker_row, "worker"),
        (0.2, pg_row, "PostgreSQL"),
    ):
        values = [results.cell(system, row).median or 0.0 for system in systems]
        right.bar([i + offset for i in range(len(systems))], values, 0.4, label=label)
    right.set_xticks(range(len(systems)), systems, rotation=15)
    right.set_ylabel("CPU ms per task (1 process x 4)")
    right.set_title("CPU per task")
    right.legend(fontsize="small")

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
