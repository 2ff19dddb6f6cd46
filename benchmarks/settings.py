"""Settings of the benchmarks: django-tasks-q and the benchmark tasks, no more.

Like the peers' settings (``benchmarks/peers/base_settings.py``) they install
only what a worker needs, so that memory and start-up figures compare queues,
not projects. The database comes from the demo project's rules
(``DATABASE_URL``, else SQLite at ``TASKS_Q_SQLITE_PATH``);
``BENCH_DATABASE_NAME`` replaces the database name (each measurement creates
its own database); ``TASKS_Q_BENCH`` is JSON merged into ``TASKS_Q``, for
example ``{"LISTEN": false}``.
"""

import json
import os

from testproject.settings import DATABASES

SECRET_KEY = "bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_tasks_q",
    "benchmarks.benchapp",
]

if os.environ.get("BENCH_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["BENCH_DATABASE_NAME"]

TASKS_Q = json.loads(os.environ.get("TASKS_Q_BENCH") or "{}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
