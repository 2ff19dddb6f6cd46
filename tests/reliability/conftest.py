"""Fixtures of the chaos suite, and the summary it prints at the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest

from tests.helpers import StartWorker
from tests.reliability import chaos

_SUMMARIES = pytest.StashKey[list[dict[str, Any]]]()


#: Type of the ``publish`` fixture.
Publish = Callable[[chaos.Report], None]


class MakeCluster(Protocol):
    """Type of the ``make_cluster`` fixture."""

    def __call__(self, timings: chaos.Timings, **options: Any) -> chaos.Cluster: ...


@pytest.fixture(autouse=True)
def probe_table(transactional_db: None) -> None:
    """Start every scenario with an empty probe table.

    Every scenario needs a transactional database: its workers, or threads,
    see only committed rows.
    """
    chaos.reset_probe_table()


@pytest.fixture
def make_cluster(start_worker: StartWorker, worker_env: dict[str, str]) -> MakeCluster:
    """Return a function that builds a ``chaos.Cluster`` with given timings;
    its workers are stopped at teardown like every ``start_worker`` one."""

    def make(timings: chaos.Timings, **options: Any) -> chaos.Cluster:
        return chaos.Cluster(start_worker, worker_env, timings, **options)

    return make


@pytest.fixture
def publish(request: pytest.FixtureRequest) -> Publish:
    """Return a function that records a scenario's report: for the summary
    at the end of this run, and for ``long_run.py`` when it asked for one.

    Publish before asserting, so a failed run is summarized too.
    """
    summaries = request.config.stash.setdefault(_SUMMARIES, [])

    def record(report: chaos.Report) -> None:
        summary = report.summary()
        summaries.append(summary)
        chaos.write_summary(summary)

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summaries = config.stash.get(_SUMMARIES, [])
    if not summaries:
        return
    terminalreporter.section("chaos summary")
    for summary in summaries:
        facts = ", ".join(
            f"{key}={value}"
            for key, value in summary.items()
            if key not in {"scenario", "violations", "fault_log"}
            and value not in ({}, None)
        )
        problems = len(summary.get("violations", []))
        terminalreporter.write_line(
            f"{summary['scenario']}: {facts}, violations={problems}"
        )
