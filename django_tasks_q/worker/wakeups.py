"""What wakes a worker's claim loop: notifications, a timer, or the poll.

On PostgreSQL with ``LISTEN`` on, a listener thread wakes the loop as soon
as a send to one of the worker's queues commits, and once more after every
(re)connect, since sends made while it was disconnected were not heard. On
every database the loop also wakes for the earliest scheduled task it could
claim, and at least every poll interval.

A worker whose slots all claim their next task themselves (it has a backlog)
needs no wake-up, so it stops listening until it runs dry: PostgreSQL would
otherwise wake its listening connection for every task that finishes.
"""

from __future__ import annotations

import logging
import threading

from ..notifications import Listener, notifications_enabled, queue_channel

logger = logging.getLogger("django_tasks_q.worker")


class Wakeups:
    """The claim loop's alarm clock; ``wait()`` returns on the first of a
    notification, ``wake()``, or the timeout."""

    def __init__(self, *, worker_id: str, database: str, queues: list[str]) -> None:
        self.worker_id = worker_id
        self._event = threading.Event()
        self._listener: Listener | None = None
        self.listening = notifications_enabled(database)
        if self.listening:
            self._listener = Listener(
                database=database,
                channels=[queue_channel(queue) for queue in queues],
                on_notify=self._on_notify,
                on_connect=self._on_connect,
                on_resume=self.wake,
                name="tasks-q-wakeup-listener",
                application_name=f"tasks-q worker {worker_id} listener",
            )

    def start(self) -> None:
        if self._listener is None:
            logger.info(
                "Worker id=%s polls for new tasks (no LISTEN/NOTIFY here)",
                self.worker_id,
                extra={"action": "worker_polling", "worker_id": self.worker_id},
            )
            return
        logger.info(
            "Worker id=%s listens for new tasks with LISTEN/NOTIFY, and polls",
            self.worker_id,
            extra={"action": "worker_listening", "worker_id": self.worker_id},
        )
        self._listener.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()

    def wake(self) -> None:
        self._event.set()

    def set_busy(self, busy: bool) -> None:
        """Whether the worker has a backlog; a busy worker stops listening,
        and one that runs dry listens again and makes a claim pass."""
        if self._listener is None:
            return
        if busy:
            self._listener.pause()
        else:
            self._listener.resume()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def _on_notify(self, channel: str, payload: str) -> None:
        self._event.set()

    def _on_connect(self, reconnected: bool) -> None:
        # A full claim pass: whatever was sent while nobody listened is there.
        self._event.set()
        if reconnected:
            logger.info(
                "Worker id=%s listens again after its listening connection dropped",
                self.worker_id,
                extra={"action": "listener_reconnected", "worker_id": self.worker_id},
            )
