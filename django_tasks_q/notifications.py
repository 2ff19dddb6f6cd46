"""PostgreSQL LISTEN/NOTIFY: wake-ups for workers and for result waiters.

Two kinds of channel carry notifications:

- ``tasks_q.queue.<queue>``, notified by a send inside its own transaction
  (once per queue per transaction), so workers wake only once the tasks are
  visible, and a rolled-back send wakes nobody;
- ``tasks_q.finished``, notified with the task id by every write that ends a
  task, so ``get()`` returns as soon as the row can be read.

Listening takes a dedicated autocommit psycopg connection, never one of
Django's: a Django connection runs transactions, and notifications are only
delivered between them. Every listener has a polling fallback, so a lost
notification delays work by at most a poll interval and never strands it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .conf import get_settings, is_valid_queue_name

logger = logging.getLogger("django_tasks_q.notifications")

QUEUE_CHANNEL_PREFIX = "tasks_q.queue."
FINISHED_CHANNEL = "tasks_q.finished"

#: How the result waiters' listening connection shows in pg_stat_activity.
RESULT_LISTENER_NAME = "tasks-q result listener"

#: Seconds between health checks of an idle listening connection.
PING_INTERVAL = 5.0
#: Longest a listener blocks before it looks at its stop flag.
LISTEN_SLICE = 0.5
FIRST_RECONNECT_DELAY = 0.1
MAX_RECONNECT_DELAY = 5.0


def notifications_enabled(database: str) -> bool:
    """Whether ``database`` is PostgreSQL and ``TASKS_Q["LISTEN"]`` is on."""
    return get_settings().listen and connections[database].vendor == "postgresql"


def queue_channel(queue: str) -> str:
    """The channel that announces new tasks in ``queue``."""
    if not is_valid_queue_name(queue):
        # Names are validated at send and at worker start; this guards the
        # channel name itself.
        raise ValueError(f"{queue!r} is not a valid queue name.")
    return QUEUE_CHANNEL_PREFIX + queue


# Sending notifications


def already_notified(connection: BaseDatabaseWrapper, queue: str) -> bool:
    """Whether this transaction already notified ``queue``.

    Each NOTIFY leaves a marker in Django's commit queue; Django drops the
    markers of a rolled-back transaction or savepoint along with the NOTIFY
    itself, so a marker still queued means the NOTIFY still stands.
    """
    if not connection.in_atomic_block:
        return False
    marker = getattr(connection, "_tasks_q_notified", {}).get(queue)
    return marker is not None and any(
        queued[1] is marker for queued in connection.run_on_commit
    )


def remember_notified(connection: BaseDatabaseWrapper, queue: str) -> None:
    """Record a NOTIFY of ``queue`` sent in the current transaction, if any."""
    if not connection.in_atomic_block:
        return
    markers: dict[str, Callable[[], None]] = connection.__dict__.setdefault(
        "_tasks_q_notified", {}
    )

    def marker() -> None:
        markers.pop(queue, None)

    markers[queue] = marker
    connection.on_commit(marker)


def notify_finished(database: str, task_ids: Iterable[object]) -> None:
    """Tell result waiters that these tasks ended; call inside the transaction
    that ends them."""
    ids = [str(task_id) for task_id in task_ids]
    if not ids or not notifications_enabled(database):
        return
    with connections[database].cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, task_id) FROM unnest(%s::text[]) AS task_id",
            [FINISHED_CHANNEL, ids],
        )


# Listening


def open_listening_connection(database: str, application_name: str) -> Any:
    """A new autocommit psycopg connection to ``database``, outside Django's
    connection handling, shown as ``application_name`` in pg_stat_activity."""
    import psycopg

    params = connections[database].get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    params["application_name"] = application_name.encode()[:63].decode(errors="ignore")
    return psycopg.connect(**params, autocommit=True)


class Listener(threading.Thread):
    """Listens on ``channels`` on its own connection, for as long as it runs.

    ``on_notify(channel, payload)`` is called for every notification, on this
    thread. ``on_connect(reconnected)`` is called once the channels are
    listened to: at the start, and after each reconnect, when notifications
    sent meanwhile may have been missed.

    ``pause()`` stops listening (UNLISTEN) until ``resume()``, within a
    ``LISTEN_SLICE``: PostgreSQL wakes every listening backend of a database
    for every notification sent in it, whatever the channel, so a listener
    that has no use for them costs the server work. ``on_resume()`` is
    called once listening again, since notifications sent meanwhile were not
    heard.
    """

    def __init__(
        self,
        *,
        database: str,
        channels: list[str],
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[bool], None],
        name: str,
        application_name: str,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.database = database
        self.application_name = application_name
        self.channels = channels
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.on_resume = on_resume
        self.connected = threading.Event()
        self._stopped = threading.Event()
        self._paused = threading.Event()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(LISTEN_SLICE + 5)

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def run(self) -> None:
        delay = FIRST_RECONNECT_DELAY
        connected_before = False
        while not self._stopped.is_set():
            try:
                connection = self._connect()
            except Exception as exc:
                self._log_failure("could not connect", exc)
            else:
                try:
                    self.on_connect(connected_before)
                    connected_before = True
                    delay = FIRST_RECONNECT_DELAY
                    self._listen(connection)
                except Exception as exc:
                    if not self._stopped.is_set():
                        self._log_failure("lost its connection", exc)
                finally:
                    self.connected.clear()
                    connection.close()
            self._stopped.wait(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    def _connect(self) -> Any:
        connection = open_listening_connection(self.database, self.application_name)
        try:
            self._subscribe(connection)
        except Exception:
            connection.close()
            raise
        self.connected.set()
        return connection

    def _subscribe(self, connection: Any) -> None:
        from psycopg import sql

        for channel in self.channels:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _listen(self, connection: Any) -> None:
        last_ping = time.monotonic()
        listening = True
        while not self._stopped.is_set():
            for notify in connection.notifies(timeout=LISTEN_SLICE):
                self.on_notify(notify.channel, notify.payload)

            wanted = not self._paused.is_set()
            if wanted != listening:
                if wanted:
                    self._subscribe(connection)
                    if self.on_resume is not None:
                        self.on_resume()
                else:
                    connection.execute("UNLISTEN *")
                listening = wanted
                self._log_pause(paused=not listening)
            if time.monotonic() - last_ping >= PING_INTERVAL:
                # A dead server or a cut connection shows up here, not in
                # notifies(), which just keeps waiting.
                connection.execute("SELECT 1")
                last_ping = time.monotonic()

    def _log_pause(self, *, paused: bool) -> None:
        logger.debug(
            "Listener %s %s",
            self.name,
            "stops listening until resumed" if paused else "listens again",
            extra={
                "action": "listener_paused" if paused else "listener_resumed",
                "listener": self.name,
            },
        )

    def _log_failure(self, what: str, exc: Exception) -> None:
        logger.warning(
            "Listener %s %s (%s); retrying",
            self.name,
            what,
            exc,
            extra={"action": "listener_failed", "listener": self.name},
        )


# Result waiters: one shared listener per process


class FinishedTasks:
    """Dispatches ``tasks_q.finished`` notifications to the waiters of each
    task; listens only while someone waits (and ``LINGER`` seconds after)."""

    #: Seconds the connection stays open after the last waiter leaves, so a
    #: loop of send-and-get does not reconnect every time.
    LINGER = 2.0
    #: Seconds a new waiter waits for the connection before it falls back to
    #: polling.
    CONNECT_WAIT = 2.0

    def __init__(self, database: str) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Callable[[], None]]] = {}
        self._listener: Listener | None = None
        self._idle_since: float | None = None
        self._janitor: threading.Timer | None = None

    def close(self) -> None:
        """Stop listening now, whoever still waits (they fall back to polls)."""
        with self._lock:
            listener, self._listener = self._listener, None
            if self._janitor is not None:
                self._janitor.cancel()
        if listener is not None:
            listener.stop()

    def subscribe(self, task_id: str, wake: Callable[[], None]) -> bool:
        """Call ``wake`` when ``task_id`` may have finished; ``True`` once the
        connection listens, ``False`` if it could not in time (poll then)."""
        with self._lock:
            self._waiters.setdefault(task_id, set()).add(wake)
            self._idle_since = None
            listener = self._ensure_listener()
        return listener.connected.wait(self.CONNECT_WAIT)

    def unsubscribe(self, task_id: str, wake: Callable[[], None]) -> None:
        with self._lock:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[task_id]
            if not self._waiters:
                self._idle_since = time.monotonic()
                self._schedule_close()

    def _ensure_listener(self) -> Listener:
        if self._listener is None or not self._listener.is_alive():
            self._listener = Listener(
                database=self.database,
                channels=[FINISHED_CHANNEL],
                on_notify=self._on_notify,
                on_connect=self._on_connect,
                name="tasks-q-result-listener",
                application_name=RESULT_LISTENER_NAME,
            )
            self._listener.start()
        return self._listener

    def _schedule_close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        self._janitor = threading.Timer(self.LINGER, self._close_if_idle)
        self._janitor.daemon = True
        self._janitor.start()

    def _close_if_idle(self) -> None:
        with self._lock:
            idle = self._idle_since
            if self._waiters or idle is None:
                return
            if time.monotonic() - idle < self.LINGER:
                return
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    def _on_notify(self, channel: str, payload: str) -> None:
        with self._lock:
            wakes = list(self._waiters.get(payload, ()))
        for wake in wakes:
            wake()

    def _on_connect(self, reconnected: bool) -> None:
        if not reconnected:
            return
        # Completions sent while the connection was down were missed.
        with self._lock:
            wakes = [wake for waiters in self._waiters.values() for wake in waiters]
        for wake in wakes:
            wake()


_finished_tasks: dict[tuple[int, str], FinishedTasks] = {}
_finished_tasks_lock = threading.Lock()


def finished_tasks(database: str) -> FinishedTasks:
    """This process's dispatcher for ``database`` (a forked child gets its
    own, since threads do not survive a fork)."""
    key = (os.getpid(), database)
    with _finished_tasks_lock:
        if key not in _finished_tasks:
            _finished_tasks[key] = FinishedTasks(database)
        return _finished_tasks[key]


def close_result_listeners() -> None:
    """Close every result listener of this process, for example before the
    database it listens to is dropped."""
    with _finished_tasks_lock:
        dispatchers = list(_finished_tasks.values())
    for dispatcher in dispatchers:
        dispatcher.close()
