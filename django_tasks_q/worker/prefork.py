"""``--pool prefork``: each slot is a child process running one task at a time.

A thread in the worker supervises each child. It hands the child one
claimed task, then waits for the child's answer, its death or the task's
deadline, whichever comes first. Because a process, unlike a thread, can be
killed, this pool enforces timeouts and cancellation: the child is killed
and replaced, and its siblings keep running. A task that kills its own
process (``os._exit``, a signal, a segfault) takes down only its child; the
supervisor counts the crash at once, as a rescue would.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Literal

from .. import claims
from ..claims import ClaimedTask
from ..liveness import record_crash
from ..registry import registry
from .child import DONE, READY, ChildConfig, main
from .connections import drop_broken_connections
from .execution import retry_delay, timeout_error
from .persistence import DurableWriter, OutcomeLost

logger = logging.getLogger("django_tasks_q.worker")

#: Seconds a new child may take to import the project and set Django up.
CHILD_START_TIMEOUT = 60.0

#: Seconds to wait before starting a child again after one failed to start.
CHILD_RESTART_BACKOFF = 1.0

#: Seconds a child gets to exit after its pipe is closed at shutdown.
CHILD_EXIT_TIMEOUT = 5.0

KillReason = Literal["timeout", "cancel", "abort"]

_Work = tuple[ClaimedTask, "Future[None]"] | None


class ChildStartFailed(Exception):
    """A child process died or hung before it was ready."""


class PreforkPool:
    """``size`` child processes, each supervised by a thread of the worker."""

    # A child may still be starting when its task arrives; it starts the
    # attempt itself once it runs.
    starts_at_claim = False

    def __init__(
        self,
        *,
        size: int,
        worker_id: str,
        application_name: str,
        max_crashes: int,
        writer: DurableWriter,
        on_thread_start: Callable[[], None],
    ) -> None:
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._slots = [
            ChildSlot(
                number=number,
                config=ChildConfig(
                    application_name=f"{application_name} child {number}",
                    log_level=logging.getLogger("django_tasks_q").getEffectiveLevel(),
                    write_retry_budget=writer.budget,
                ),
                worker_id=worker_id,
                max_crashes=max_crashes,
                writer=writer,
            )
            for number in range(1, size + 1)
        ]
        self._threads = [
            threading.Thread(
                target=slot.serve,
                args=(self._work, on_thread_start),
                name=f"tasks-q-child-{slot.number}",
                daemon=True,
            )
            for slot in self._slots
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, claimed: ClaimedTask) -> Future[None]:
        future: Future[None] = Future()
        self._work.put((claimed, future))
        return future

    def request_cancel(self, claimed: ClaimedTask) -> bool:
        return any(slot.kill_if_running(claimed, "cancel") for slot in self._slots)

    def abort(self, claimed: ClaimedTask) -> bool:
        return any(slot.kill_if_running(claimed, "abort") for slot in self._slots)

    def shutdown(self, *, wait: bool) -> None:
        for _slot in self._slots:
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def child_pids(self) -> list[int]:
        return [pid for slot in self._slots if (pid := slot.pid) is not None]


class ChildSlot:
    """One child process and the attempt it is running, if any."""

    def __init__(
        self,
        *,
        number: int,
        config: ChildConfig,
        worker_id: str,
        max_crashes: int,
        writer: DurableWriter,
    ) -> None:
        self.number = number
        self.config = config
        self.worker_id = worker_id
        self.max_crashes = max_crashes
        self.writer = writer
        self._process: BaseProcess | None = None
        self._pipe: Connection | None = None
        self._lock = threading.Lock()
        self._running: ClaimedTask | None = None
        self._kill_reason: KillReason | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def serve(
        self, work: queue.SimpleQueue[_Work], on_thread_start: Callable[[], None]
    ) -> None:
        on_thread_start()
        self._start_child_quietly()
        try:
            while (item := work.get()) is not None:
                claimed, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    self._run(claimed)
                except Exception:
                    logger.exception(
                        "Worker id=%s could not supervise task id=%s",
                        self.worker_id,
                        claimed.id,
                        extra={
                            "action": "task_write_failed",
                            "task_id": str(claimed.id),
                        },
                    )
                finally:
                    drop_broken_connections()
                    future.set_result(None)
        finally:
            self._stop_child()

    def kill_if_running(self, claimed: ClaimedTask, reason: KillReason) -> bool:
        """Kill the child if it runs this very attempt; ``True`` if it did."""
        with self._lock:
            running = self._running
            if running is None or running.lease_token != claimed.lease_token:
                return False
            self._kill_reason = reason
            if self._process is not None:
                self._process.kill()
        if reason == "abort" and self._process is not None:
            self._process.join(CHILD_EXIT_TIMEOUT)
        return True

    # One attempt

    def _run(self, claimed: ClaimedTask) -> None:
        try:
            process, pipe = self._ensure_child()
        except ChildStartFailed as exc:
            logger.error(
                "Worker id=%s could not start child %s (%s); task id=%s goes back",
                self.worker_id,
                self.number,
                exc,
                claimed.id,
                extra={"action": "child_start_failed", "task_id": str(claimed.id)},
            )
            self._write(claimed, "release", lambda: claims.release(claimed))
            time.sleep(CHILD_RESTART_BACKOFF)
            return

        with self._lock:
            self._running, self._kill_reason = claimed, None
        try:
            pipe.send(claimed)
            ended = self._wait_for_child(claimed, process, pipe)
        finally:
            with self._lock:
                self._running = None
                reason = self._kill_reason

        if ended:
            process.join()
            self._process = self._pipe = None
            self._after_child_died(claimed, reason, process.exitcode)
            self._start_child_quietly()

    def _wait_for_child(
        self, claimed: ClaimedTask, process: BaseProcess, pipe: Connection
    ) -> bool:
        """Wait for the attempt to end; ``True`` when the child ended too."""
        deadline = None
        if claimed.timeout is not None:
            deadline = time.monotonic() + claimed.timeout

        while True:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready = wait([pipe, process.sentinel], timeout)
            if pipe in ready:
                try:
                    if pipe.recv() == DONE:
                        return False
                except EOFError:
                    return True
            elif ready:
                return True
            else:
                with self._lock:
                    self._kill_reason = "timeout"
                process.kill()
                return True

    def _after_child_died(
        self, claimed: ClaimedTask, reason: KillReason | None, exit_code: int | None
    ) -> None:
        if reason == "abort":
            return  # The worker gives the attempt back itself.

        if reason == "cancel":
            message = "The task was cancelled while it ran; its process was killed."
            self._write(
                claimed, "cancel", lambda: claims.cancel_running(claimed, message)
            )
            return

        if reason == "timeout":
            assert claimed.timeout is not None
            error = timeout_error(claimed.timeout)
            delay = retry_delay(registry.get(claimed.name), claimed, error, None)
            logger.warning(
                "Task id=%s ran past its timeout of %gs; its child was killed",
                claimed.id,
                claimed.timeout,
                extra={"action": "task_timed_out", "task_id": str(claimed.id)},
            )
            self._write(claimed, "fail", lambda: claims.fail(claimed, error, delay))
            return

        cause = (
            f"The child process {self.number} of worker {self.worker_id} died "
            f"(exit code {exit_code})"
        )
        self._write(
            claimed,
            "crash",
            lambda: (
                record_crash(claimed, max_crashes=self.max_crashes, cause=cause)
                is not None
            ),
        )

    def _write(
        self, claimed: ClaimedTask, what: str, apply: Callable[[], bool]
    ) -> None:
        try:
            self.writer.write(claimed, what, apply)
        except OutcomeLost as exc:
            self.writer.hand_back(claimed, str(exc))

    # The child process

    def _ensure_child(self) -> tuple[BaseProcess, Connection]:
        if self._process is not None and self._pipe is not None:
            if self._process.is_alive():
                return self._process, self._pipe
            self._process.join()
        return self._start_child()

    def _start_child_quietly(self) -> None:
        try:
            self._start_child()
        except ChildStartFailed as exc:
            logger.error(
                "Worker id=%s could not start child %s: %s",
                self.worker_id,
                self.number,
                exc,
                extra={"action": "child_start_failed", "worker_id": self.worker_id},
            )

    def _start_child(self) -> tuple[BaseProcess, Connection]:
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=main,
            args=(child_end, self.config),
            name=f"tasks-q-child-{self.number}",
            daemon=True,
        )
        process.start()
        child_end.close()

        ready = wait([parent_end, process.sentinel], CHILD_START_TIMEOUT)
        try:
            started = parent_end in ready and parent_end.recv() == READY
        except EOFError:
            started = False
        if not started:
            process.kill()
            process.join()
            parent_end.close()
            raise ChildStartFailed(f"exit code {process.exitcode}")

        self._process, self._pipe = process, parent_end
        logger.info(
            "Worker id=%s started child %s pid=%s",
            self.worker_id,
            self.number,
            process.pid,
            extra={
                "action": "child_started",
                "worker_id": self.worker_id,
                "pid": process.pid,
            },
        )
        return process, parent_end

    def _stop_child(self) -> None:
        process, pipe = self._process, self._pipe
        self._process = self._pipe = None
        if process is None or pipe is None:
            return
        pipe.close()  # The child exits when it reads the end of the pipe.
        process.join(CHILD_EXIT_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
