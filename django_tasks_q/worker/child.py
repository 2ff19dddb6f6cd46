"""The entry point of a prefork child: set Django up, then run what the parent
sends, one attempt at a time.

Started with the ``spawn`` method, so this module is imported before Django
is set up and imports nothing that needs the app registry at module level.
The child ignores SIGTERM and SIGINT: its parent decides when it ends, by
closing the pipe (the child exits after its current attempt) or by killing
it (timeout, cancellation, a drain that ran out).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection

#: What a child sends when it is ready for work and after each attempt.
READY = "ready"
DONE = "done"


@dataclass(frozen=True)
class ChildConfig:
    application_name: str
    log_level: int
    write_retry_budget: float


def main(pipe: Connection, config: ChildConfig) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    import django

    django.setup()

    import logging
    import threading

    from .connections import ConnectionLabeller, drop_broken_connections
    from .event_loop import EventLoopThread
    from .execution import TaskExecutor
    from .logs import configure_worker_logging
    from .persistence import DurableWriter

    configure_worker_logging(config.log_level)
    logger = logging.getLogger("django_tasks_q.worker")
    ConnectionLabeller(config.application_name).install()
    executor = TaskExecutor(
        EventLoopThread(),
        DurableWriter(budget=config.write_retry_budget, stopping=threading.Event()),
        # The parent kills this process at the deadline.
        enforce_timeouts=False,
    )
    pipe.send(READY)

    while True:
        try:
            claimed = pipe.recv()
        except EOFError:
            return  # The parent closed the pipe, or died.

        try:
            executor.execute(claimed)
        except Exception:
            logger.exception(
                "Child could not record task id=%s",
                claimed.id,
                extra={"action": "task_write_failed", "task_id": str(claimed.id)},
            )
        finally:
            drop_broken_connections()

        try:
            pipe.send(DONE)
        except OSError:
            return
