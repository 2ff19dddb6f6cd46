"""Where a worker's log lines go when the project configures none."""

from __future__ import annotations

import logging
import sys

VERBOSITY_LEVELS = {
    0: logging.WARNING,
    1: logging.INFO,
    2: logging.DEBUG,
    3: logging.DEBUG,
}


def configure_worker_logging(level: int) -> None:
    """Log ``django_tasks_q.*`` at ``level``, to stderr unless the project's
    LOGGING already gives those loggers a handler."""
    logger = logging.getLogger("django_tasks_q")
    logger.setLevel(level)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logger.addHandler(handler)
