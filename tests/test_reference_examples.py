"""Run every example of the API reference page "Sending Tasks" against a worker.

The examples are copied below as the reference gives them. The only change is
the import line: ``from instance import my_task`` becomes an import from
``tests.taskapp.tasks.reference``, which defines ``my_task``, ``process``,
``process_order`` and ``Order``, and the other examples start from that
import too. Placeholders the reference leaves to the reader (``arg1``,
``arg2``, ``db_connection``) are names in the namespace the examples run in.

Each example runs one top-level statement at a time, so that a statement
with ``await`` runs on an event loop and the others run as plain code, as
they would in a view and an async endpoint.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
from typing import Any

import pydantic
import pytest
from asgiref.sync import async_to_sync

from django_tasks_q import ErrorCode, TaskHandle, TaskInfo, TaskSendError
from django_tasks_q.models import Task as TaskRow
from django_tasks_q.models import Worker as WorkerRow
from django_tasks_q.registry import registry
from tests.helpers import StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks import reference

IMPORT = "from instance import my_task"
ADAPTED_IMPORT = "from tests.taskapp.tasks.reference import my_task"
NAMES_IMPORT = "from tests.taskapp.tasks.reference import Order, process, process_order"

SEND_SYNC = """\
from instance import my_task

handle = my_task.send(arg1, arg2, key="value")
print(f"Task submitted: {handle.task_id}")
"""

SEND_ASYNC = """\
async def my_endpoint():
    handle = await my_task.send_async(arg1, arg2)
    return {"task_id": handle.task_id}
"""

DELAY = """\
# Execute after 60 seconds
handle = my_task.schedule(60, arg1, arg2)

# Execute after 5 minutes
handle = my_task.schedule(300, arg1, arg2)
"""

# The reference writes ``my_task.send(...)``, an ellipsis standing for the
# arguments; it is the one placeholder that is not a name, so it is spelled
# out as ``arg1, arg2`` here.
WAIT = """\
handle = my_task.send(arg1, arg2)

# Blocking wait
result = handle.get()

# With timeout (milliseconds)
result = handle.get(timeout_ms=5000)

# Async wait
result = await handle.get_async(timeout_ms=5000)
"""

FIRE_AND_FORGET = """\
# Send without waiting for result
my_task.send(arg1, arg2)
"""

COMPLEX_ARGUMENTS = """\
handle = process.send(
    data={"key": "value", "nested": {"a": 1}},
    items=[1, 2, 3],
)

# Pydantic models - pass the instance to preserve type metadata
order = Order(id=123, items=["a", "b"])
handle = process_order.send(order=order)

# Use model_dump() only when a plain dict is required
handle = process_order.send(order=order.model_dump())
"""

DIRECT_CALL = """\
# Runs immediately in current process
result = my_task("arg1", "arg2")
"""

MODULE_LEVEL_SEND = """\
# Wrong - suppressed during worker import
# tasks.py
handle = my_task.send("test")  # SEND_SUPPRESSED error

# Correct - call from functions/endpoints
def process():
    handle = my_task.send("test")
"""

NOT_SERIALIZABLE = """\
# Wrong
handle = my_task.send(connection=db_connection)

# Correct
handle = my_task.send(connection_url=str(db_connection.url))
"""

ARG1 = "alpha"
ARG2 = 42


class DatabaseConnection:
    """Stands for a live connection object: it has a URL, but no JSON form."""

    def __init__(self, url: str) -> None:
        self.url = url


def statements(source: str) -> list[str]:
    """Split an example into its top-level statements, as source text."""
    source = source.replace(IMPORT, ADAPTED_IMPORT)
    return [
        ast.get_source_segment(source, node) or "" for node in ast.parse(source).body
    ]


async def _await(code: Any, namespace: dict[str, Any]) -> None:
    await eval(code, namespace)


def run_statement(statement: str, namespace: dict[str, Any]) -> None:
    code = compile(
        statement, "<reference>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    if code.co_flags & inspect.CO_COROUTINE:
        async_to_sync(_await)(code, namespace)
    else:
        exec(code, namespace)


def run_example(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    for statement in statements(source):
        run_statement(statement, namespace)
    return namespace


@pytest.fixture
def namespace() -> dict[str, Any]:
    """The names the reference's examples take for granted."""
    names: dict[str, Any] = {
        "arg1": ARG1,
        "arg2": ARG2,
        "db_connection": DatabaseConnection("postgres://app@db.internal/app"),
    }
    exec(ADAPTED_IMPORT, names)
    exec(NAMES_IMPORT, names)
    return names


@pytest.fixture
def worker(start_worker: StartWorker) -> WorkerProcess:
    process = start_worker("--poll-interval", "0.1")

    def ready() -> bool:
        assert process.process.poll() is None, process.output()
        return WorkerRow.objects.filter(stopped_at=None).exists()

    wait_until(ready, timeout=30, message="the worker to register")
    return process


def echoed(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What ``my_task`` returns for these arguments."""
    return {"args": list(args), "kwargs": kwargs}


@pytest.mark.django_db(transaction=True)
def test_reference_send_sync(
    worker: WorkerProcess, namespace: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_example(SEND_SYNC, namespace)

    handle = namespace["handle"]
    assert capsys.readouterr().out == f"Task submitted: {handle.task_id}\n"
    assert isinstance(handle.task_id, str)
    assert handle.get(timeout_ms=5000).ok == echoed(ARG1, ARG2, key="value")


@pytest.mark.django_db(transaction=True)
def test_reference_send_async(worker: WorkerProcess, namespace: dict[str, Any]) -> None:
    run_example(SEND_ASYNC, namespace)

    response = async_to_sync(namespace["my_endpoint"])()

    handle: TaskHandle[Any] = TaskHandle(response["task_id"])
    assert handle.get(timeout_ms=5000).ok == echoed(ARG1, ARG2)


@pytest.mark.django_db(transaction=True)
def test_reference_delay_execution(
    worker: WorkerProcess, namespace: dict[str, Any]
) -> None:
    run_example(DELAY, namespace)

    rows = TaskRow.objects.order_by("id")
    delays = [(row.run_after - row.enqueued_at).total_seconds() for row in rows]
    assert [round(delay) for delay in delays] == [60, 300]
    assert {row.status for row in rows} == {"PENDING"}
    assert rows[0].args == [ARG1, ARG2]
    waited = namespace["handle"].get(timeout_ms=200)
    assert waited.err.error_code == ErrorCode.WAIT_TIMEOUT


@pytest.mark.django_db(transaction=True)
def test_reference_wait_for_result(
    worker: WorkerProcess, namespace: dict[str, Any]
) -> None:
    run_example(WAIT, namespace)

    assert namespace["result"].is_ok()
    assert namespace["result"].ok == echoed(ARG1, ARG2)


@pytest.mark.django_db(transaction=True)
def test_reference_fire_and_forget(
    worker: WorkerProcess, namespace: dict[str, Any]
) -> None:
    run_example(FIRE_AND_FORGET, namespace)

    row = TaskRow.objects.get()
    assert (row.name, row.args, row.kwargs) == (
        reference.my_task.name,
        [ARG1, ARG2],
        {},
    )
    handle: TaskHandle[Any] = TaskHandle(str(row.id))
    assert handle.get(timeout_ms=5000).ok == echoed(ARG1, ARG2)


@pytest.mark.django_db(transaction=True)
def test_reference_pass_complex_arguments(
    worker: WorkerProcess, namespace: dict[str, Any]
) -> None:
    run_example(COMPLEX_ARGUMENTS, namespace)

    rows = list(TaskRow.objects.order_by("id"))
    results = [TaskHandle(str(row.id)).get(timeout_ms=5000).ok for row in rows]
    assert results == [
        {"data": {"key": "value", "nested": {"a": 1}}, "total": 6},
        "Order 123 with 2 item(s)",
        "Order 123 with 2 item(s)",
    ]
    assert rows[1].kwargs["order"]["__tq__"] == "pydantic"
    assert rows[2].kwargs["order"] == {"id": 123, "items": ["a", "b"]}


@pytest.mark.django_db(transaction=True)
def test_reference_models_must_be_importable() -> None:
    class LocalOrder(pydantic.BaseModel):
        id: int

    MainOrder = type(
        "MainOrder",
        (pydantic.BaseModel,),
        {"__module__": "__main__", "__annotations__": {"id": int}},
    )

    for model in (LocalOrder, MainOrder):
        with pytest.raises(TaskSendError) as raised:
            reference.process_order.send(order=model(id=1))
        assert raised.value.code == ErrorCode.VALIDATION_FAILED
        assert raised.value.parameter == "order"

    assert not TaskRow.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_reference_execute_directly(namespace: dict[str, Any]) -> None:
    run_example(DIRECT_CALL, namespace)

    assert namespace["result"] == echoed("arg1", "arg2")
    assert not TaskRow.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_reference_module_level_send_is_suppressed(
    worker: WorkerProcess, namespace: dict[str, Any]
) -> None:
    wrong, *correct = statements(MODULE_LEVEL_SEND)

    # Stands for the worker importing tasks.py: autodiscovery suppresses sends.
    with registry.suppress_sends(), pytest.raises(TaskSendError) as raised:
        run_statement(wrong, namespace)
    assert raised.value.code == ErrorCode.SEND_SUPPRESSED
    assert not TaskRow.objects.exists()

    for statement in correct:
        run_statement(statement, namespace)
    namespace["process"]()

    row = TaskRow.objects.get()
    assert row.args == ["test"]
    assert TaskHandle(str(row.id)).get(timeout_ms=5000).ok == echoed("test")


@pytest.mark.django_db(transaction=True)
def test_reference_non_serializable_arguments(
    worker: WorkerProcess, namespace: dict[str, Any]
) -> None:
    wrong, correct = statements(NOT_SERIALIZABLE)

    with pytest.raises(TaskSendError) as raised:
        run_statement(wrong, namespace)
    run_statement(correct, namespace)

    assert raised.value.code == ErrorCode.VALIDATION_FAILED
    assert raised.value.parameter == "connection"
    assert "DatabaseConnection" in raised.value.message
    result = namespace["handle"].get(timeout_ms=5000)
    assert result.ok == echoed(connection_url="postgres://app@db.internal/app")


@pytest.mark.django_db(transaction=True)
def test_reference_task_handle_api(worker: WorkerProcess) -> None:
    handle = reference.my_task.send(ARG1)
    result = handle.get(timeout_ms=5000)

    info = handle.info(include_result=True, include_failed_reason=True)
    info_async = async_to_sync(handle.info_async)()
    result_async = async_to_sync(handle.get_async)(timeout_ms=5000)

    assert isinstance(info, TaskInfo)
    assert (info.task_id, info.status, info.failed_reason) == (
        handle.task_id,
        "COMPLETED",
        None,
    )
    assert info.result == result == result_async
    assert info_async is not None
    assert info_async.result is None  # Not asked for.
    assert isinstance(info.finished_at, dt.datetime)
    assert TaskHandle("00000000-0000-7000-8000-000000000000").info() is None
