"""The ``@task`` decorator: names, options, registration and inline calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_tasks_q import (
    AsyncTask,
    RetryPolicy,
    Task,
    TaskRegistrationError,
    task,
)
from django_tasks_q.models import Task as TaskRow
from django_tasks_q.registry import TaskRegistry, registry
from tests.taskapp.tasks.api import add, add_async, send_email

MODULE = __name__


@pytest.fixture
def isolated_registry() -> Iterator[TaskRegistry]:
    """Let a test register tasks of its own and forget them afterwards.

    The registry is global and the system checks read it, so a task declared
    by one test must not outlive it.
    """
    saved = dict(registry._tasks)

    yield registry

    registry._tasks.clear()
    registry._tasks.update(saved)


def test_bare_decorator_returns_a_registered_sync_task(
    isolated_registry: TaskRegistry,
) -> None:
    def bare_sync(a: int) -> int:
        return a * 2

    decorated = task(bare_sync)

    assert type(decorated) is Task
    assert decorated.is_async is False
    assert decorated.name == f"{MODULE}.bare_sync"
    assert isolated_registry.get(decorated.name) is decorated


def test_decorator_with_options_returns_a_registered_task(
    isolated_registry: TaskRegistry,
) -> None:
    def with_options() -> None:
        pass

    decorated = task(queue="bulk")(with_options)

    assert type(decorated) is Task
    assert decorated.queue == "bulk"
    assert isolated_registry.get(f"{MODULE}.with_options") is decorated


def test_decorator_on_async_def_returns_an_async_task(
    isolated_registry: TaskRegistry,
) -> None:
    async def bare_async() -> int:
        return 1

    bare = task(bare_async)
    with_options = task(name=f"{MODULE}.async_with_options")(bare_async)

    assert type(bare) is AsyncTask
    assert bare.is_async is True
    assert type(with_options) is AsyncTask


def test_default_name_is_module_and_function_name() -> None:
    name = add.name

    assert name == "tests.taskapp.tasks.api.add"
    assert add.func_path == "tests.taskapp.tasks.api.add"
    assert registry.get(name) is add


def test_explicit_name_replaces_the_default(isolated_registry: TaskRegistry) -> None:
    def renamed() -> None:
        pass

    decorated = task(name="billing.renamed")(renamed)

    assert decorated.name == "billing.renamed"
    assert isolated_registry.get("billing.renamed") is decorated
    assert f"{MODULE}.renamed" not in isolated_registry


def test_options_are_stored_on_the_task() -> None:
    policy = send_email.retry_policy

    assert send_email.queue == "emails"
    assert send_email.priority == 10
    assert send_email.timeout == 30
    assert policy == RetryPolicy.exponential(base_seconds=2, max_retries=4)
    assert send_email.auto_retry_for == (ConnectionError, "RATE_LIMITED")
    assert send_email.max_attempts == 5


def test_defaults_without_options() -> None:
    queue = add.queue

    assert queue == "default"
    assert add.priority == 0
    assert add.timeout is None
    assert add.retry_policy is None
    assert add.auto_retry_for == ()
    assert add.max_attempts == 1


def test_task_keeps_the_function_metadata(isolated_registry: TaskRegistry) -> None:
    def documented(a: int) -> int:
        """Double a number."""
        return a * 2

    decorated = task(documented)

    assert decorated.__doc__ == "Double a number."
    assert decorated.__name__ == "documented"
    assert decorated.__wrapped__ is documented
    assert repr(decorated) == f"<Task {MODULE}.documented>"


@pytest.mark.django_db
def test_direct_call_runs_inline_without_a_row() -> None:
    result = add(2, 3)

    assert result == 5
    assert TaskRow.objects.count() == 0


@pytest.mark.django_db
def test_direct_call_of_async_task_returns_its_coroutine() -> None:
    coroutine = add_async(2, 3)

    assert asyncio.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 5
    assert TaskRow.objects.count() == 0


def test_direct_call_raises_the_function_exception(
    isolated_registry: TaskRegistry,
) -> None:
    @task
    def explode() -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        explode()


def test_duplicate_name_from_another_function_raises(
    isolated_registry: TaskRegistry,
) -> None:
    @task(name="shared.name")
    def first() -> None:
        pass

    def second() -> None:
        pass

    with pytest.raises(TaskRegistrationError) as raised:
        task(name="shared.name")(second)

    message = str(raised.value)
    assert "'shared.name'" in message
    assert first.func_path in message
    assert f"{MODULE}.{second.__qualname__}" in message
    assert isolated_registry.get("shared.name") is first


def test_registering_the_same_function_again_replaces_the_entry(
    isolated_registry: TaskRegistry,
) -> None:
    def reloaded() -> int:
        return 1

    first = task(name="reloaded.task")(reloaded)

    second = task(name="reloaded.task")(reloaded)

    assert second is not first
    assert isolated_registry.get("reloaded.task") is second


def test_decorating_a_non_callable_raises() -> None:
    with pytest.raises(TaskRegistrationError, match="needs a function, not 42"):
        task(42)  # type: ignore[call-overload]


def _undecorated() -> None:
    pass


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"queue": "has space"}, "'has space'", id="queue-space"),
        pytest.param({"queue": "x" * 49}, "'" + "x" * 49 + "'", id="queue-too-long"),
        pytest.param({"queue": "-dash"}, "'-dash'", id="queue-leading-dash"),
        pytest.param({"queue": "émail"}, "'émail'", id="queue-non-ascii"),
        pytest.param({"priority": "high"}, "'high'", id="priority-str"),
        pytest.param({"priority": 1.5}, "1.5", id="priority-float"),
        pytest.param({"priority": True}, "True", id="priority-bool"),
        pytest.param(
            {"retry_policy": {"max_retries": 3}},
            "{'max_retries': 3}",
            id="retry-policy-dict",
        ),
        pytest.param(
            {"retry_policy": RetryPolicy.fixed(1), "auto_retry_for": (ValueError, 7)},
            "not 7",
            id="auto-retry-for-int",
        ),
        pytest.param(
            {"retry_policy": RetryPolicy.fixed(1), "auto_retry_for": (object,)},
            "<class 'object'>",
            id="auto-retry-for-non-exception-class",
        ),
        pytest.param(
            {"auto_retry_for": (ValueError,)},
            "auto_retry_for needs a retry_policy",
            id="auto-retry-for-without-policy",
        ),
        pytest.param({"timeout": 0}, "not 0", id="timeout-zero"),
        pytest.param({"timeout": -5}, "-5", id="timeout-negative"),
        pytest.param({"timeout": "30"}, "'30'", id="timeout-str"),
        pytest.param({"timeout": True}, "True", id="timeout-bool"),
        pytest.param({"timeout": float("nan")}, "nan", id="timeout-nan"),
        pytest.param({"name": 123}, "123", id="name-not-str"),
    ],
)
def test_invalid_option_raises_naming_the_bad_value(
    isolated_registry: TaskRegistry, options: dict[str, Any], expected: str
) -> None:
    decorator: Callable[[Callable[[], None]], Any] = task(**options)

    with pytest.raises(TaskRegistrationError) as raised:
        decorator(_undecorated)

    assert expected in str(raised.value)
    assert f"{MODULE}._undecorated" in str(raised.value)
    assert f"{MODULE}._undecorated" not in isolated_registry
