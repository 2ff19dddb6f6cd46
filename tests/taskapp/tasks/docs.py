"""Tasks used by tests/test_docs*.py.

These are the example tasks of ``docs/``: every ``python title="myapp/tasks.py"``
block there must match a definition here (``test_docs`` compares them), and
the runnable blocks import them from here in place of ``myapp.tasks``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from decimal import Decimal

import pydantic

from django_tasks_q import RetryPolicy, TaskFailure, current_task, task

# getting-started.md


@task
def send_welcome(user_id: int, *, template: str = "welcome") -> str:
    return f"Sent the {template!r} email to user {user_id}."


# defining-tasks.md


@task(
    name="billing.charge",
    queue="billing",
    priority=10,
    retry_policy=RetryPolicy.exponential(base_seconds=2, max_retries=5),
    auto_retry_for=(ConnectionError, "RATE_LIMITED"),
    timeout=30,
)
def charge(order_id: int, amount: Decimal) -> str:
    return f"Charged {amount} for order {order_id}."


@task
async def check_status(url: str) -> int:
    await asyncio.sleep(0.1)  # Stands for an HTTP request made with await.
    return 200


@task(
    retry_policy=RetryPolicy.fixed(0.5, max_retries=3),
    auto_retry_for=("RATE_LIMITED",),
)
def fetch_rates(currency: str) -> dict[str, float]:
    # Pretend that the rates API refuses the first two calls.
    if current_task().attempt in (1, 2):
        raise TaskFailure("RATE_LIMITED", "The rates API asked us to slow down.")
    return {currency: 1.08}


@task
def import_feed(url: str) -> int:
    if not url.startswith("https://"):
        raise TaskFailure("INSECURE_URL", f"Refusing to fetch {url}.", {"url": url})
    return 0


@task
def resize_images(paths: list[str]) -> int:
    context = current_task()
    for done, path in enumerate(paths, start=1):
        time.sleep(0.05)  # Stands for the real work on ``path``.
        context.set_progress(done, len(paths), f"Resized {path}")
    return len(paths)


# sending-tasks.md


@task
def generate_report(report_id: int) -> str:
    return f"Report {report_id} is ready."


class Order(pydantic.BaseModel):
    id: int
    items: list[str]


@dataclass
class Address:
    city: str
    postcode: str


@task
def ship_order(order: Order, address: Address) -> str:
    return f"{len(order.items)} item(s) of order {order.id} go to {address.city}."


# retrieving-results.md


@task
def crunch(seconds: float) -> str:
    time.sleep(seconds)
    return "crunched"


@task
def divide(a: float, b: float) -> float:
    return a / b


# serialization.md


@task
def remind(when: dt.datetime, order: Order, tags: tuple[str, ...]) -> Order:
    return order.model_copy(update={"items": [*order.items, *tags]})


# workers.md


@task
def export_rows(count: int) -> int:
    for _row in range(count):
        current_task().raise_if_cancelled()
        time.sleep(0.01)  # Export one row.
    return count
