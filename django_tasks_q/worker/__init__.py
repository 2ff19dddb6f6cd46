"""The ``runworker`` process: claim loop, task execution, connection care."""

from .loop import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions"]
