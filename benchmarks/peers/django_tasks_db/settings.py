"""Settings of the django-tasks-db peer: its database backend as the default
task backend."""

from benchmarks.peers.base_settings import *  # noqa: F403
from benchmarks.peers.base_settings import BASE_APPS

INSTALLED_APPS = [*BASE_APPS, "django_tasks_db", "benchmarks.peers.django_tasks_db"]

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}
