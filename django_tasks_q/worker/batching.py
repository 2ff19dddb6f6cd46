"""Completing the tasks that finish on several slots together, in one commit.

With ``TASKS_Q["COMPLETION_BATCH_WAIT"]`` above zero, a thread pool slot
whose task completed does not store the result on its own. The first slot to
finish waits, at most that many seconds, for the other busy slots to finish
too, then stores every result and claims every next task in one statement
(``claims.complete_many_and_claim``); the slots that joined wait for it and
go on with the task it claimed for them. Short tasks then cost the database
one statement, one plan and one commit per batch instead of per task.

The price is the wait, and a longer window in which a finished task's result
lives only in the worker's memory. A worker that dies inside it (between a
task's return and the batch's commit) loses nothing: the tasks are still
RUNNING under its leases, so they are rescued and run again, as after a
death during any task. Each task in the batch is fenced on its own lease; a
lease lost to a rescue rejects that task's result only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import claims
from ..claims import ClaimedTask, CompletedAndClaimed, FinishedTask, NextClaim
from .persistence import DurableWriter, OutcomeLost


@dataclass
class _Member:
    """One slot's completion, waiting in a batch."""

    finished: FinishedTask
    done: threading.Event = field(default_factory=threading.Event)
    outcome: CompletedAndClaimed | None = None
    error: BaseException | None = None


class CompletionBatcher:
    """Gathers the completions of slots that finish close together.

    ``busy_slots`` says how many slots are running a task, those waiting in
    the forming batch included: once they have all joined, nobody else can,
    so the batch goes at once instead of at the end of the wait.
    """

    def __init__(
        self, *, wait: float, busy_slots: Callable[[], int], writer: DurableWriter
    ) -> None:
        self.wait = wait
        self._busy_slots = busy_slots
        self._writer = writer
        self._joined = threading.Condition()
        self._forming: list[_Member] = []

    def complete_and_claim(
        self, claimed: ClaimedTask, result: Any, then: NextClaim | None
    ) -> CompletedAndClaimed:
        """Store ``result`` and claim ``then`` with the other slots' completions;
        block until the batch is committed. Raises ``OutcomeLost`` when the
        batch could not be stored."""
        member = _Member(FinishedTask(claimed, result, then))
        with self._joined:
            self._forming.append(member)
            leads = len(self._forming) == 1
            self._joined.notify_all()
            if leads:
                batch = self._gather()

        if not leads:
            member.done.wait()
            if member.error is not None:
                raise OutcomeLost(str(member.error)) from member.error
            assert member.outcome is not None
            return member.outcome

        return self._store(batch)

    def _gather(self) -> list[_Member]:
        """Wait for the busy slots to join, at most ``wait`` seconds, and take
        the batch; called with the lock held, by the first member."""
        deadline = time.monotonic() + self.wait
        while len(self._forming) < self._busy_slots():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._joined.wait(remaining)
        batch, self._forming = self._forming, []
        return batch

    def _store(self, batch: list[_Member]) -> CompletedAndClaimed:
        """Run the batch's statement, retried through outages as one write,
        and hand each member its outcome; the leader's is returned."""
        leader = batch[0]
        outcomes: list[CompletedAndClaimed] = []

        def write() -> bool:
            outcomes[:] = claims.complete_many_and_claim([m.finished for m in batch])
            return True

        try:
            self._writer.write(leader.finished.claimed, "complete", write)
        except BaseException as exc:
            for member in batch[1:]:
                member.error = exc
                member.done.set()
            raise

        for member, outcome in zip(batch, outcomes, strict=True):
            member.outcome = outcome
            member.done.set()
        return outcomes[0]
