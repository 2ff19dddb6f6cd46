"""Read-only admin pages for tasks and their attempts."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from .models import Task, TaskAttempt, Worker


def _pretty_json(value: Any) -> str:
    if value in (None, "", [], {}):
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows are written by senders and workers only; staff may only look."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TaskAttemptInline(admin.TabularInline):  # type: ignore[type-arg]
    model = TaskAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "number",
        "outcome",
        "worker_id",
        "started_at",
        "finished_at",
        "error_code",
        "error_message",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "name",
        "queue",
        "status",
        "priority",
        "attempts",
        "enqueued_at",
        "finished_at",
    ]
    list_filter = ["status", "queue", "name"]
    search_fields = ["=id"]
    date_hierarchy = "enqueued_at"
    inlines = [TaskAttemptInline]
    fieldsets = [
        (None, {"fields": ["id", "name", "queue", "priority", "status"]}),
        ("Arguments", {"fields": ["arguments_display"]}),
        (
            "Timing",
            {
                "fields": [
                    "enqueued_at",
                    "run_after",
                    "good_until",
                    "claimed_at",
                    "started_at",
                    "finished_at",
                    "cancel_requested_at",
                ]
            },
        ),
        (
            "Execution",
            {
                "fields": [
                    "attempts",
                    "max_attempts",
                    "crashes",
                    "timeout",
                    "worker_id",
                    "progress_display",
                ]
            },
        ),
        ("Result", {"fields": ["result_display"]}),
        (
            "Error",
            {
                "fields": [
                    "error_code",
                    "error_message",
                    "exception_type",
                    "error_data_display",
                    "traceback_display",
                ]
            },
        ),
    ]
    readonly_fields = [
        "id",
        "name",
        "queue",
        "priority",
        "status",
        "arguments_display",
        "enqueued_at",
        "run_after",
        "good_until",
        "claimed_at",
        "started_at",
        "finished_at",
        "cancel_requested_at",
        "attempts",
        "max_attempts",
        "crashes",
        "timeout",
        "worker_id",
        "progress_display",
        "result_display",
        "error_code",
        "error_message",
        "exception_type",
        "error_data_display",
        "traceback_display",
    ]

    @admin.display(description="arguments")
    def arguments_display(self, task: Task) -> str:
        return _pretty_json({"args": task.args, "kwargs": task.kwargs})

    @admin.display(description="result")
    def result_display(self, task: Task) -> str:
        return _pretty_json(task.result)

    @admin.display(description="progress")
    def progress_display(self, task: Task) -> str:
        return _pretty_json(task.progress)

    @admin.display(description="error data")
    def error_data_display(self, task: Task) -> str:
        return _pretty_json(task.error_data)

    @admin.display(description="traceback")
    def traceback_display(self, task: Task) -> str:
        if not task.traceback:
            return "-"
        return format_html("<pre>{}</pre>", task.traceback)


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "hostname",
        "pid",
        "concurrency",
        "started_at",
        "last_heartbeat_at",
        "stopped_at",
    ]
    search_fields = ["=id", "hostname"]
    readonly_fields = [
        "id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "started_at",
        "last_heartbeat_at",
        "stopped_at",
    ]
