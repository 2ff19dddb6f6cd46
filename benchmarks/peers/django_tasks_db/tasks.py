"""The no-op task, a Django task (``django.tasks`` from Django 6.0, else the
``django_tasks`` backport)."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with django-tasks-db[compat]
    from django_tasks import task  # type: ignore[import-not-found,no-redef,unused-ignore]


@task
def noop() -> None:
    """Return at once."""
