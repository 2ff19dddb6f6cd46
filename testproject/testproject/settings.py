"""Settings of the demo project, which the test suite extends.

Environment variables:

- ``DATABASE_URL``: a ``postgres://`` URL; unset or empty means SQLite.
- ``TASKS_Q_SQLITE_PATH``: the SQLite file (default ``testproject/db.sqlite3``).
- ``TASKS_Q_DB_NAME``: replaces the database name, so that a worker
  subprocess started by the tests opens the test database.
- ``DJANGO_DEBUG``: ``1``, ``true``, ``yes`` or ``on`` turns DEBUG on.
"""

import os
from pathlib import Path
from typing import Any

from testproject.database_url import parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

# Demo only: this key is public, so never deploy these settings.
SECRET_KEY = "django-insecure-demo-only-tasks-q-3v9#r!x2m@k7p$w1"

DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in {"1", "true", "yes", "on"}

ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tasks_q",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _default_database() -> dict[str, Any]:
    url = os.environ.get("DATABASE_URL", "")
    if url:
        database = parse_database_url(url)
    else:
        sqlite_path = os.environ.get("TASKS_Q_SQLITE_PATH") or BASE_DIR / "db.sqlite3"
        database = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            "OPTIONS": {
                # BEGIN IMMEDIATE serializes claims, since SQLite ignores
                # SELECT ... FOR UPDATE; WAL lets readers run beside a writer.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }

    # Requests close their connection when they end; the worker opens and
    # keeps its own connections, so it must not depend on this value.
    database["CONN_MAX_AGE"] = 0

    name = os.environ.get("TASKS_Q_DB_NAME")
    if name:
        database["NAME"] = name

    return database


DATABASES = {"default": _default_database()}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
