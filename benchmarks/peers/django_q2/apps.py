from django.apps import AppConfig


class BenchDjangoQ2Config(AppConfig):
    name = "benchmarks.peers.django_q2"
    label = "bench_django_q2"
