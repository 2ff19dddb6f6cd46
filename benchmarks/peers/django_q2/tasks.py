"""The no-op task: django-q2 runs any importable function by its dotted path."""

NOOP = "benchmarks.peers.django_q2.tasks.noop"


def noop() -> None:
    """Return at once."""
