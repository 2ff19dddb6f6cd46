"""Django set-up shared by the Django-based peers.

Each such peer has a settings module under its own folder that starts with
``from benchmarks.peers.base_settings import *``; :func:`setup` points it at
the bench database (through the environment, so that the worker
subprocesses read the same) and creates the peer's tables.
"""

from __future__ import annotations

import os

from benchmarks.harness import BenchDatabase
from benchmarks.peers._common import DATABASE_ENV, WorkerCommand, database_to_env
from benchmarks.peers._common import python as _python


def setup(settings_module: str, database: BenchDatabase) -> None:
    """Configure Django with ``settings_module`` for ``database``, run the
    migrations, and close the connection (its statistics are then reported
    long before any measurement window opens)."""
    import django
    from django.conf import settings

    if settings.configured:
        current = os.environ.get("DJANGO_SETTINGS_MODULE")
        if current != settings_module:
            raise RuntimeError(
                f"Django is already configured ({current}); each peer "
                "measurement needs a process of its own."
            )
    os.environ[DATABASE_ENV] = database_to_env(database)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    django.setup()

    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    connections.close_all()


def manage(settings_module: str, *args: str) -> WorkerCommand:
    """A ``django-admin`` command line run with the driver's interpreter."""
    return WorkerCommand(
        [_python(), "-m", "django", *args],
        {"DJANGO_SETTINGS_MODULE": settings_module},
    )


def close_connections() -> None:
    from django.db import connections

    connections.close_all()
