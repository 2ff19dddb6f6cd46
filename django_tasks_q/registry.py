"""The registry of ``@task`` functions, and send suppression during imports.

A task name stored in the database is only ever looked up here; it is never
treated as an import path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.utils.module_loading import module_has_submodule

from .codes import ErrorCode
from .exceptions import TaskRegistrationError, TaskSendError

if TYPE_CHECKING:
    from .task import BaseTask

logger = logging.getLogger("django_tasks_q.registry")


@dataclass(frozen=True)
class ImportSendError:
    """A tasks module that tried to send a task while it was being imported."""

    module: str
    error: TaskSendError


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, BaseTask[Any, Any]] = {}
        self._lock = threading.Lock()
        self._suppress_depth = 0
        self.import_send_errors: list[ImportSendError] = []

    def register(self, task: BaseTask[Any, Any]) -> None:
        """Add ``task``; a name taken by a different function is an error.

        Re-registering the same function (a module imported twice, as the
        autoreloader does) replaces the entry.
        """
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.func_path != task.func_path:
                raise TaskRegistrationError(
                    f"Task name {task.name!r} is already used by "
                    f"{existing.func_path}; give {task.func_path} another name."
                )
            self._tasks[task.name] = task

    def get(self, name: str) -> BaseTask[Any, Any] | None:
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def all(self) -> list[BaseTask[Any, Any]]:
        return list(self._tasks.values())

    @property
    def sends_suppressed(self) -> bool:
        return self._suppress_depth > 0

    @contextmanager
    def suppress_sends(self) -> Iterator[None]:
        """Make every send raise ``SEND_SUPPRESSED`` inside the block."""
        self._suppress_depth += 1
        try:
            yield
        finally:
            self._suppress_depth -= 1

    def autodiscover(self) -> None:
        """Import every installed app's ``tasks`` module with sends suppressed.

        A module that sends at import time is recorded, not raised, so that
        commands such as ``migrate`` still run; the ``django_tasks_q.E003``
        check and ``runworker`` report it.
        """
        for app_config in apps.get_app_configs():
            if not module_has_submodule(app_config.module, "tasks"):
                continue

            module_name = f"{app_config.name}.tasks"
            try:
                with self.suppress_sends():
                    import_module(module_name)
            except TaskSendError as exc:
                if exc.code != ErrorCode.SEND_SUPPRESSED:
                    raise
                self.import_send_errors.append(ImportSendError(module_name, exc))
                logger.error(
                    "Tasks module %s sends a task while it is imported: %s",
                    module_name,
                    exc,
                    extra={"action": "send_suppressed", "tasks_module": module_name},
                )


registry = TaskRegistry()
