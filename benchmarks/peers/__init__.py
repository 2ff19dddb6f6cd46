"""Drivers of the peer task queues the throughput benchmark compares with.

``PEERS`` maps a short key to the class implementing
:class:`benchmarks.harness.System`; the peer's module (and so the peer
itself, an optional install) is imported only when its key is looked up::

    system = PEERS["procrastinate"]()
    system.prepare(database)
    result = system.drain(5000, processes=1, concurrency=4)

``python -m benchmarks.peers --help`` runs one measurement and prints JSON.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

__all__ = ["PEERS"]

_PATHS = {
    "django-tasks-db": "benchmarks.peers.django_tasks_db.driver:DjangoTasksDb",
    "procrastinate": "benchmarks.peers.procrastinate.driver:Procrastinate",
    "django-q2": "benchmarks.peers.django_q2.driver:DjangoQ2",
    "horsies": "benchmarks.peers.horsies.driver:Horsies",
}


class _LazyPeers(Mapping[str, type]):
    """A read-only mapping that imports a driver on first look-up."""

    def __getitem__(self, key: str) -> type:
        module, _, name = _PATHS[key].partition(":")
        cls: type = getattr(importlib.import_module(module), name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(_PATHS)

    def __len__(self) -> int:
        return len(_PATHS)


PEERS: Mapping[str, type] = _LazyPeers()
