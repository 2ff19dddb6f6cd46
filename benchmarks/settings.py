"""Settings of the benchmarks: the demo project plus the benchmark tasks.

``BENCH_DATABASE_NAME`` replaces the database name (the benchmark creates
its own database); ``TASKS_Q_BENCH`` is JSON merged into ``TASKS_Q``, for
example ``{"LISTEN": false}``.
"""

import json
import os

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.benchapp"]

if os.environ.get("BENCH_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["BENCH_DATABASE_NAME"]

TASKS_Q = json.loads(os.environ.get("TASKS_Q_BENCH") or "{}")
