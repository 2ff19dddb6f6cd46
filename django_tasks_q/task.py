"""The ``@task`` decorator and the task objects it returns."""

from __future__ import annotations

import datetime as dt
import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from asgiref.sync import sync_to_async

from .conf import PRIORITY_RANGE, get_settings, is_valid_priority, is_valid_queue_name
from .exceptions import TaskRegistrationError
from .handle import TaskHandle
from .registry import registry
from .retry import RetryPolicy
from .sending import SendOptions, send_calls
from .signatures import TaskSignature

P = ParamSpec("P")
T = TypeVar("T")

Delay = float | int | dt.timedelta
Call = tuple[Sequence[Any], dict[str, Any]]
RetryMatcher = type[BaseException] | str


class BaseTask(Generic[P, T]):
    """A registered task function with its default send options.

    Build one with ``@task``; send it with ``send()``, ``send_async()``,
    ``schedule()`` or ``send_many()``, or pick other options for one send
    with ``using()``.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retry_policy: RetryPolicy | None = None,
        auto_retry_for: Iterable[RetryMatcher] = (),
        timeout: float | None = None,
    ) -> None:
        self.func = func
        self.func_path = f"{func.__module__}.{func.__qualname__}"
        self.name = f"{func.__module__}.{func.__name__}" if name is None else name
        self._queue = queue
        self.priority = priority
        self.retry_policy = retry_policy
        self.auto_retry_for = tuple(auto_retry_for)
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = TaskSignature(func)
        self._check_options()

        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__wrapped__ = func

    def _check_options(self) -> None:
        where = f"@task {self.func_path}"
        if not isinstance(self.name, str) or not self.name:
            raise TaskRegistrationError(
                f"{where}: name must be a non-empty string, not {self.name!r}."
            )
        if self._queue is not None and not is_valid_queue_name(self._queue):
            raise TaskRegistrationError(
                f"{where}: queue name {self._queue!r} is invalid; use letters, "
                "digits, '_', '.' and '-' (at most 48 characters)."
            )
        if not is_valid_priority(self.priority):
            raise TaskRegistrationError(
                f"{where}: priority must be an integer between "
                f"{PRIORITY_RANGE.start} and {PRIORITY_RANGE.stop - 1}, "
                f"not {self.priority!r}."
            )
        if self.retry_policy is not None and not isinstance(
            self.retry_policy, RetryPolicy
        ):
            raise TaskRegistrationError(
                f"{where}: retry_policy must be a RetryPolicy, "
                f"not {self.retry_policy!r}."
            )
        for matcher in self.auto_retry_for:
            is_exception = isinstance(matcher, type) and issubclass(
                matcher, BaseException
            )
            if not (is_exception or isinstance(matcher, str)):
                raise TaskRegistrationError(
                    f"{where}: auto_retry_for takes exception classes and error "
                    f"code strings, not {matcher!r}."
                )
        if self.auto_retry_for and self.retry_policy is None:
            raise TaskRegistrationError(
                f"{where}: auto_retry_for needs a retry_policy that says how "
                "often and how long to wait."
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not math.isfinite(self.timeout)
            or self.timeout <= 0
        ):
            raise TaskRegistrationError(
                f"{where}: timeout must be a positive number of seconds, "
                f"not {self.timeout!r}."
            )

    @property
    def queue(self) -> str:
        """The task's queue; the ``DEFAULT_QUEUE`` setting when none was given."""
        return self._queue or get_settings().default_queue

    @property
    def max_attempts(self) -> int:
        return self.retry_policy.max_attempts if self.retry_policy else 1

    def using(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: dt.datetime | None = None,
        delay: Delay | None = None,
        good_until: dt.datetime | dt.timedelta | None = None,
    ) -> TaskSender[P, T]:
        """Return a sender with some options replaced for the sends it makes.

        ``run_at`` and ``delay`` say when the task becomes claimable (give one
        of them); ``good_until`` is a deadline after which an unstarted task
        ends ``EXPIRED`` instead of running.
        """
        options = SendOptions(
            queue=self.queue if queue is None else queue,
            priority=self.priority if priority is None else priority,
            run_at=run_at,
            delay=delay,
            good_until=good_until,
        )
        return TaskSender(self, options)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue one run of the task and return its handle."""
        return self.using().send(*args, **kwargs)

    async def send_async(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue like ``send()`` without blocking the event loop."""
        return await self.using().send_async(*args, **kwargs)

    def schedule(
        self, delay: Delay, /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]:
        """Enqueue a run that becomes claimable ``delay`` seconds from now."""
        return self.using(delay=delay).send(*args, **kwargs)

    async def schedule_async(
        self, delay: Delay, /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]:
        """Async twin of ``schedule()``."""
        return await self.using(delay=delay).send_async(*args, **kwargs)

    def send_many(self, calls: Iterable[Call]) -> list[TaskHandle[T]]:
        """Enqueue one run per ``(args, kwargs)`` pair in one transaction."""
        return self.using().send_many(calls)

    async def send_many_async(self, calls: Iterable[Call]) -> list[TaskHandle[T]]:
        """Async twin of ``send_many()``."""
        return await self.using().send_many_async(calls)

    def handle(self, task_id: str) -> TaskHandle[T]:
        """Rebuild the handle of a run of this task from its stored id."""
        return TaskHandle(task_id, task_name=self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Task(BaseTask[P, T]):
    """A task whose function is synchronous."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the function inline: no row, no queue, no retries."""
        result: T = self.func(*args, **kwargs)
        return result


class AsyncTask(BaseTask[P, T]):
    """A task whose function is ``async def``; workers run it on an event loop."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        """Return the coroutine of an inline run: no row, no queue, no retries."""
        coroutine: Coroutine[Any, Any, T] = self.func(*args, **kwargs)
        return coroutine


class TaskSender(Generic[P, T]):
    """A task bound to one set of send options; made by ``Task.using()``."""

    def __init__(self, task: BaseTask[P, T], options: SendOptions) -> None:
        self.task = task
        self.options = options

    def send(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue one run with these options."""
        return send_calls(self.task, self.options, [(args, kwargs)])[0]

    async def send_async(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue like ``send()`` without blocking the event loop."""
        handles = await sync_to_async(send_calls)(
            self.task, self.options, [(args, kwargs)]
        )
        return handles[0]

    def schedule(
        self, delay: Delay, /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]:
        """Enqueue a run that becomes claimable ``delay`` seconds from now."""
        return self.task.using(
            queue=self.options.queue,
            priority=self.options.priority,
            delay=delay,
            good_until=self.options.good_until,
        ).send(*args, **kwargs)

    async def schedule_async(
        self, delay: Delay, /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]:
        """Async twin of ``schedule()``."""
        return await sync_to_async(self.schedule)(delay, *args, **kwargs)

    def send_many(self, calls: Iterable[Call]) -> list[TaskHandle[T]]:
        """Enqueue one run per ``(args, kwargs)`` pair in one transaction."""
        return send_calls(self.task, self.options, list(calls))

    async def send_many_async(self, calls: Iterable[Call]) -> list[TaskHandle[T]]:
        """Async twin of ``send_many()``."""
        return await sync_to_async(send_calls)(self.task, self.options, list(calls))


@overload
def task(  # type: ignore[overload-overlap]  # Coroutine functions match first.
    func: Callable[P, Awaitable[T]], /
) -> AsyncTask[P, T]: ...


@overload
def task(func: Callable[P, T], /) -> Task[P, T]: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    retry_policy: RetryPolicy | None = None,
    auto_retry_for: Iterable[RetryMatcher] = (),
    timeout: float | None = None,
) -> _TaskDecorator: ...


def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    retry_policy: RetryPolicy | None = None,
    auto_retry_for: Iterable[RetryMatcher] = (),
    timeout: float | None = None,
) -> Any:
    """Register a function as a task; use bare (``@task``) or with options.

    :param name: The name stored with every run and looked up by workers;
        defaults to ``"<module>.<function>"``. Renaming a task strands the
        runs already queued under the old name.
    :param queue: The queue runs go to; defaults to ``TASKS_Q["DEFAULT_QUEUE"]``.
    :param priority: Higher runs first among claimable tasks; default 0.
    :param retry_policy: How often and how long to wait before running a
        failed task again; ``None`` (the default) never retries.
    :param auto_retry_for: Which failures are retried: exception classes
        (matched with ``isinstance``) and error-code strings. Empty means
        every failure the policy could help with.
    :param timeout: Seconds a run may take; stored with the task.
    """
    options: dict[str, Any] = {
        "name": name,
        "queue": queue,
        "priority": priority,
        "retry_policy": retry_policy,
        "auto_retry_for": auto_retry_for,
        "timeout": timeout,
    }
    if func is not None:
        return _make_task(func, options)
    return _TaskDecorator(options)


class _TaskDecorator:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]  # Coroutines match first.
        self, func: Callable[P, Awaitable[T]], /
    ) -> AsyncTask[P, T]: ...

    @overload
    def __call__(self, func: Callable[P, T], /) -> Task[P, T]: ...

    def __call__(self, func: Callable[..., Any], /) -> Any:
        return _make_task(func, self.options)


def _make_task(func: Callable[..., Any], options: dict[str, Any]) -> Any:
    if not callable(func):
        raise TaskRegistrationError(f"@task needs a function, not {func!r}.")

    task_class = AsyncTask if inspect.iscoroutinefunction(func) else Task
    new_task: BaseTask[Any, Any] = task_class(func, **options)
    registry.register(new_task)
    return new_task
