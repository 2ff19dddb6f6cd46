"""The test settings plus ``tests.badapp``, whose tasks module sends on import."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.badapp"]
