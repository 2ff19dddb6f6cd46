"""The horsies app of the benchmark: its broker on the database of
``BENCH_PEER_DATABASE``, and the no-op task.

``horsies worker benchmarks.peers.horsies.app:app`` imports this module, and
so do its child processes.
"""

from __future__ import annotations

from horsies import AppConfig, Horsies, PostgresConfig, TaskError, TaskResult
from pydantic import SecretStr

from benchmarks.peers._common import database_from_env, postgres_url


def make_app() -> Horsies:
    """A horsies app on the bench database, with the default queue."""
    params = database_from_env().params
    url = postgres_url(params, driver="postgresql+psycopg")
    return Horsies(config=AppConfig(broker=PostgresConfig(database_url=SecretStr(url))))


app = make_app()


@app.task("noop")
def noop() -> TaskResult[None, TaskError]:
    """Return at once."""
    return TaskResult(ok=None)
