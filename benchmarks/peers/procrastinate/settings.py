"""Settings of the procrastinate peer: its Django integration, on the default
database."""

from benchmarks.peers.base_settings import *  # noqa: F403
from benchmarks.peers.base_settings import BASE_APPS

INSTALLED_APPS = [
    *BASE_APPS,
    "procrastinate.contrib.django",
    "benchmarks.peers.procrastinate",
]
