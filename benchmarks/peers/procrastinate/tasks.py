"""The no-op task, registered on procrastinate's Django app (found by its
autodiscovery of ``tasks`` modules)."""

from procrastinate.contrib.django import app


@app.task(name="noop")
def noop() -> None:
    """Return at once."""
