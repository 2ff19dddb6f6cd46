"""Checked by tests/test_typing.py: mypy must report exactly the marked lines."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from django_tasks_q import TaskHandle, TaskResult, task
from django_tasks_q.results import TaskError


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue="emails", priority=5)
def greet(name: str, *, punctuation: str = "!") -> str:
    return name + punctuation


@task
async def fetch(url: str) -> bytes:
    return url.encode()


coroutine: Coroutine[Any, Any, bytes] = fetch("https://example.com")
coroutine.close()
assert_type(add.send(1, 2), TaskHandle[int])
assert_type(greet.using(priority=9).send("Ada"), TaskHandle[str])
assert_type(fetch.schedule(5, "https://example.com"), TaskHandle[bytes])
assert_type(add.send(1, 2).get(timeout_ms=10), TaskResult[int, TaskError])
assert_type(add(1, 2), int)

add.send(1, "two")  # E: wrong argument type
add.send(1)  # E: missing argument
greet.send("Ada", exclamation="?")  # E: unknown keyword
fetch.schedule("soon", "https://example.com")  # E: delay is a number
greet.using(priority=1).send(3)  # E: wrong argument type through using()
