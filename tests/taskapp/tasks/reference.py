"""Tasks used by tests/test_reference*.py.

They stand for the tasks that the API reference's examples send: ``my_task``
takes whatever it is given and returns it, so each test can see what the
worker received.
"""

from __future__ import annotations

from typing import Any

import pydantic

from django_tasks_q import task


@task
def my_task(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task
def process(data: dict[str, Any], items: list[int]) -> dict[str, Any]:
    return {"data": data, "total": sum(items)}


class Order(pydantic.BaseModel):
    id: int
    items: list[str]


@task
def process_order(order: Order) -> str:
    return f"{type(order).__name__} {order.id} with {len(order.items)} item(s)"
