"""System checks: ``django_tasks_q.E001`` and on, listed in docs/configuration.md."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .conf import get_settings, is_valid_queue_name
from .registry import registry

RECOMMENDED_SQLITE_OPTIONS = (
    '{"transaction_mode": "IMMEDIATE", "timeout": 20, '
    '"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}'
)


@register(Tags.compatibility)
def check_settings(**kwargs: Any) -> list[CheckMessage]:
    try:
        tasks_settings = get_settings()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="django_tasks_q.E001")]

    errors: list[CheckMessage] = []
    if tasks_settings.database not in settings.DATABASES:
        errors.append(
            Error(
                f"TASKS_Q['DATABASE'] names {tasks_settings.database!r}, which is "
                "not in DATABASES.",
                hint=f"Use one of {', '.join(sorted(settings.DATABASES))}.",
                id="django_tasks_q.E001",
            )
        )
    return errors


@register(Tags.compatibility)
def check_queue_names(**kwargs: Any) -> list[CheckMessage]:
    try:
        tasks_settings = get_settings()
    except ImproperlyConfigured:
        return []  # Reported by check_settings.

    names = dict.fromkeys(tasks_settings.queues, "TASKS_Q['QUEUES']")
    names.setdefault(tasks_settings.default_queue, "TASKS_Q['DEFAULT_QUEUE']")
    for task in registry.all():
        names.setdefault(task.queue, f"@task {task.name}")

    return [
        Error(
            f"Queue name {name!r} in {source} is invalid.",
            hint="Use letters, digits, '_', '.' and '-', at most 48 characters.",
            id="django_tasks_q.E002",
        )
        for name, source in sorted(names.items())
        if not is_valid_queue_name(name)
    ]


@register(Tags.compatibility)
def check_import_sends(**kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"Tasks module {failure.module!r} sends a task while it is imported, "
            "so it would enqueue again every time a process starts.",
            hint="Move the .send() call into a function, view or command.",
            id="django_tasks_q.E003",
        )
        for failure in registry.import_send_errors
    ]


@register(Tags.compatibility)
def check_channels_order(**kwargs: Any) -> list[CheckMessage]:
    if not apps.is_installed("channels"):
        return []

    labels = [config.name for config in apps.get_app_configs()]
    if labels.index("channels") > labels.index("django_tasks_q"):
        return []
    return [
        Error(
            "'channels' is listed before 'django_tasks_q' in INSTALLED_APPS, so "
            "its own runworker command replaces this app's.",
            hint="List 'django_tasks_q' above 'channels' in INSTALLED_APPS.",
            id="django_tasks_q.E004",
        )
    ]


@register(Tags.compatibility)
def check_sqlite_options(**kwargs: Any) -> list[CheckMessage]:
    """SQLite needs these options before several workers can share a file."""
    try:
        alias = get_settings().database
    except ImproperlyConfigured:
        return []

    database = settings.DATABASES.get(alias, {})
    if not database.get("ENGINE", "").endswith("sqlite3"):
        return []

    options = database.get("OPTIONS", {})
    missing = []
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        missing.append('"transaction_mode": "IMMEDIATE"')
    if not options.get("timeout"):
        missing.append('"timeout" (seconds to wait on a locked database)')
    if "journal_mode=wal" not in str(options.get("init_command", "")).lower():
        missing.append('"init_command" with "PRAGMA journal_mode=WAL"')

    if not missing:
        return []
    return [
        Warning(
            f"SQLite database {alias!r} lacks OPTIONS {', '.join(missing)}; "
            "workers and senders will hit 'database is locked'.",
            hint=f"Set DATABASES[{alias!r}]['OPTIONS'] = {RECOMMENDED_SQLITE_OPTIONS}.",
            id="django_tasks_q.W001",
        )
    ]
