from django.apps import AppConfig


class BadAppConfig(AppConfig):
    """Holds a tasks module that wrongly sends at import time."""

    name = "tests.badapp"
    label = "badapp"
