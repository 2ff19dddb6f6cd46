"""React to SIGTERM and SIGINT on a thread of their own, never in a handler.

Python runs a signal handler in the main thread, between two of its
bytecodes, so the handler may interrupt code that holds a lock. The claim loop
spends its time in ``threading.Event.wait()`` and ``clear()``, which hold the
event's non-reentrant lock for a few bytecodes each: a handler that called
``Event.set()`` there would wait forever on a lock its own thread holds, and
the worker would never stop. So the handler does nothing; the signal number
reaches a relay thread through ``signal.set_wakeup_fd()``, and the reaction
(logging, stopping the worker) runs there, where waiting on a lock is safe.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, TypeAlias

logger = logging.getLogger("django_tasks_q.worker")

#: What ``signal.signal()`` takes and returns.
Handler: TypeAlias = (
    Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
)

#: Written to the pipe by ``uninstall()`` to end the relay thread; no signal
#: has this number.
_CLOSE = 0


def _let_the_relay_react(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the wakeup fd has the signal already."""


class SignalRelay:
    """Calls ``on_signal(signum)`` on the ``tasks-q-signals`` thread for each
    of ``signals`` the process receives, from ``install()`` to
    ``uninstall()``. Both must be called from the main thread."""

    def __init__(
        self, on_signal: Callable[[int], None], signals: Iterable[signal.Signals]
    ) -> None:
        self._on_signal = on_signal
        self._signals = tuple(signals)
        self._previous_handlers: dict[signal.Signals, Handler] = {}
        self._previous_wakeup_fd = -1
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        read_fd, write_fd = os.pipe()
        # The C-level handler must never block on a full pipe.
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._thread = threading.Thread(
            target=self._relay, args=(read_fd,), name="tasks-q-signals", daemon=True
        )
        self._thread.start()

        self._previous_wakeup_fd = signal.set_wakeup_fd(
            write_fd, warn_on_full_buffer=False
        )
        for signum in self._signals:
            self._previous_handlers[signum] = signal.signal(
                signum, _let_the_relay_react
            )

    def uninstall(self) -> None:
        if self._pipe is None:
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        signal.set_wakeup_fd(self._previous_wakeup_fd)

        read_fd, write_fd = self._pipe
        os.write(write_fd, bytes([_CLOSE]))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        os.close(read_fd)
        os.close(write_fd)
        self._pipe = None

    def _relay(self, read_fd: int) -> None:
        while True:
            received = os.read(read_fd, 64)
            for signum in received:
                if signum == _CLOSE:
                    return
                # Other signals with Python handlers also reach the wakeup
                # fd; only ours are relayed.
                if signum in self._signals:
                    self._react(signum)

    def _react(self, signum: int) -> None:
        # The thread must outlive a failed reaction, or later signals would
        # go unheard.
        try:
            self._on_signal(signum)
        except Exception:
            logger.exception(
                "Could not react to %s",
                signal.Signals(signum).name,
                extra={"action": "signal_reaction_failed", "signal": signum},
            )
