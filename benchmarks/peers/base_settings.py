"""Settings every Django-based peer starts from: the database of
``BENCH_PEER_DATABASE`` (see :mod:`benchmarks.peers._common`), UTC, no
DEBUG, persistent connections.

``CONN_MAX_AGE = None``: the workers of django-tasks-db and django-q2 call
``close_old_connections()`` in their loops, which with Django's default of 0
opens a new PostgreSQL connection for every task; a deployment that cares
about throughput keeps its connections, so every peer does here.
"""

from __future__ import annotations

from typing import Any

from benchmarks.peers._common import database_from_env

SECRET_KEY = "bench-peers-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS: list[str] = []

BASE_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]


def _database() -> dict[str, Any]:
    database = database_from_env()
    if database.vendor == "postgresql":
        params = database.params
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params["dbname"],
            "USER": params.get("user", ""),
            "PASSWORD": params.get("password", ""),
            "HOST": params.get("host", ""),
            "PORT": params.get("port", ""),
            "CONN_MAX_AGE": None,
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": database.params["path"],
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


DATABASES = {"default": _database()}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
