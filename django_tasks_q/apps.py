from django.apps import AppConfig


class TasksQConfig(AppConfig):
    name = "django_tasks_q"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  Registers the system checks.
        from .registry import registry

        registry.autodiscover()
