"""The ``runworker`` process: claim loop, task execution, connection care."""

from .loop import Worker, WorkerIdInUse, WorkerOptions

__all__ = ["Worker", "WorkerIdInUse", "WorkerOptions"]
