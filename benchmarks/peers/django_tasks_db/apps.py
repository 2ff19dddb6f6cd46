from django.apps import AppConfig


class BenchDjangoTasksDbConfig(AppConfig):
    name = "benchmarks.peers.django_tasks_db"
    label = "bench_django_tasks_db"
