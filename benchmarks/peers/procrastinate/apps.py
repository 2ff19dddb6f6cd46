from django.apps import AppConfig


class BenchProcrastinateConfig(AppConfig):
    name = "benchmarks.peers.procrastinate"
    label = "bench_procrastinate"
