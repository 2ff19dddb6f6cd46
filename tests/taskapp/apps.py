from django.apps import AppConfig


class TaskAppConfig(AppConfig):
    """Holds the tasks that the test suite sends to real workers."""

    name = "tests.taskapp"
    label = "taskapp"

    def ready(self) -> None:
        from .statements import record_statements_if_asked

        record_statements_if_asked()
