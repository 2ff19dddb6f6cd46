"""Settings of the django-q2 peer: its ORM broker on the default database.

``BENCH_Q_WORKERS`` (set by the driver for each ``qcluster``) is the number
of worker processes of the cluster. Every successful task is kept
(``save_limit`` 0): its ``started``/``stopped`` are the timestamps the
benchmark reads, and the default of 250 would prune (an extra DELETE per
task) the very rows it needs.
"""

import os

from benchmarks.peers.base_settings import *  # noqa: F403
from benchmarks.peers.base_settings import BASE_APPS

INSTALLED_APPS = [*BASE_APPS, "django_q", "benchmarks.peers.django_q2"]

Q_CLUSTER = {
    "name": "bench",
    "orm": "default",
    "workers": int(os.environ.get("BENCH_Q_WORKERS", "4")),
    "timeout": 60,
    "retry": 120,
    "save_limit": 0,
    "log_level": "WARNING",
}
