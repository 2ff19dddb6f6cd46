"""Tasks used by tests/test_send.py, test_serialization.py and their peers."""

from __future__ import annotations

from typing import Any

from django_tasks_q import RetryPolicy, task
from tests.taskapp.payloads import Customer, Point


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> int:
    return a + b


@task
def echo(value: Any) -> Any:
    return value


@task
def greet(name: str, *, greeting: str = "Hello") -> str:
    return f"{greeting}, {name}!"


@task
def collect(*items: Any, **options: Any) -> list[Any]:
    return [list(items), options]


@task
def move(point: Point, dx: int = 0, dy: int = 0) -> Point:
    return Point(x=point.x + dx, y=point.y + dy)


@task
def make_points(count: int) -> list[Point]:
    return [Point(x=i, y=-i) for i in range(count)]


@task
def describe(customer: Customer) -> str:
    return f"{customer.name} of {customer.address.city}"


@task(
    queue="emails",
    priority=10,
    timeout=30,
    retry_policy=RetryPolicy.exponential(base_seconds=2, max_retries=4),
    auto_retry_for=(ConnectionError, "RATE_LIMITED"),
)
def send_email(address: str) -> str:
    return address
