"""``TaskResult``, ``TaskError`` and ``RetryPolicy``: the plain data types."""

from __future__ import annotations

import random
from typing import Any

import pytest

from django_tasks_q import ErrorCode, RetryPolicy, TaskError, TaskResult, UnwrapError


def _error(code: str = "RATE_LIMITED", message: str = "Slow down.") -> TaskError:
    return TaskError(error_code=code, message=message)


def test_ok_result_holds_the_value() -> None:
    result: TaskResult[int, TaskError] = TaskResult(ok=5)

    assert result.is_ok() is True
    assert result.is_err() is False
    assert result.ok == 5
    assert result.err is None
    assert result.unwrap() == 5
    assert repr(result) == "TaskResult(ok=5)"


def test_err_result_holds_the_error() -> None:
    error = _error()

    result: TaskResult[int, TaskError] = TaskResult(err=error)

    assert result.is_ok() is False
    assert result.is_err() is True
    assert result.ok is None
    assert result.err is error
    assert result.unwrap_err() is error


def test_ok_result_may_hold_none() -> None:
    result: TaskResult[None, TaskError] = TaskResult(ok=None)

    assert result.is_ok() is True
    assert result.unwrap() is None


def test_unwrap_of_an_error_raises_unwrap_error_carrying_it() -> None:
    error = _error("RATE_LIMITED", "The API said to slow down.")
    result: TaskResult[int, TaskError] = TaskResult(err=error)

    with pytest.raises(UnwrapError) as raised:
        result.unwrap()

    assert raised.value.error is error
    assert "RATE_LIMITED" in str(raised.value)
    assert "The API said to slow down." in str(raised.value)


def test_unwrap_err_of_a_value_raises_unwrap_error_naming_it() -> None:
    result: TaskResult[str, TaskError] = TaskResult(ok="done")

    with pytest.raises(UnwrapError) as raised:
        result.unwrap_err()

    assert raised.value.error is None
    assert "'done'" in str(raised.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="neither"),
        pytest.param({"ok": 1, "err": _error()}, id="both"),
        pytest.param({"value": 1}, id="unknown"),
    ],
)
def test_result_takes_exactly_one_of_ok_and_err(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="exactly one of ok= or err="):
        TaskResult(**kwargs)


def test_results_compare_by_kind_and_content() -> None:
    error = _error()

    assert TaskResult(ok=[1, 2]) == TaskResult(ok=[1, 2])
    assert TaskResult(err=error) == TaskResult(err=_error())
    assert TaskResult(ok=1) != TaskResult(ok=2)
    assert TaskResult(ok=None) != TaskResult(err=None)
    assert TaskResult(err=error) != TaskResult(err=_error(message="Other."))
    assert TaskResult(ok=1) != 1


def test_results_are_unhashable_since_they_hold_mutable_values() -> None:
    result: TaskResult[dict[str, int], TaskError] = TaskResult(ok={"a": 1})

    with pytest.raises(TypeError, match="unhashable"):
        hash(result)


def test_task_error_fields_and_code_alias() -> None:
    error = TaskError(
        error_code=ErrorCode.UNHANDLED_EXCEPTION,
        message="division by zero",
        data={"attempt": 2},
        exception_type="builtins.ZeroDivisionError",
        traceback="Traceback (most recent call last): ...",
    )

    assert error.code == "UNHANDLED_EXCEPTION"
    assert error.error_code == ErrorCode.UNHANDLED_EXCEPTION
    assert error.message == "division by zero"
    assert error.data == {"attempt": 2}
    assert error.exception_type == "builtins.ZeroDivisionError"
    assert error.traceback == "Traceback (most recent call last): ..."


def test_task_error_defaults_and_immutability() -> None:
    error = _error()

    assert error.data is None
    assert error.exception_type is None
    assert error.traceback is None
    with pytest.raises(AttributeError):
        error.message = "changed"  # type: ignore[misc]


def test_fixed_policy_waits_the_same_time_before_every_retry() -> None:
    policy = RetryPolicy.fixed(10, max_retries=4)

    delays = [policy.delay(retry) for retry in range(1, 6)]

    assert delays == [10, 10, 10, 10, 10]
    assert policy.max_retries == 4
    assert policy.max_attempts == 5


def test_fixed_policy_defaults_to_three_retries() -> None:
    policy = RetryPolicy.fixed(1)

    assert policy.max_retries == 3
    assert policy.jitter == 0


def test_exponential_policy_multiplies_each_delay() -> None:
    policy = RetryPolicy.exponential(2, multiplier=3, jitter=0)

    delays = [policy.delay(retry) for retry in range(1, 5)]

    assert delays == [2, 6, 18, 54]
    assert policy.max_retries == 5
    assert policy.max_attempts == 6


def test_exponential_policy_caps_delays_at_max_seconds() -> None:
    policy = RetryPolicy.exponential(1, max_seconds=10, jitter=0, max_retries=10)

    delays = [policy.nominal_delay(retry) for retry in range(1, 7)]

    assert delays == [1, 2, 4, 8, 10, 10]


def test_exponential_policy_default_cap_is_an_hour() -> None:
    policy = RetryPolicy.exponential(1, jitter=0)

    delay = policy.delay(30)

    assert delay == 3600


def test_jitter_keeps_delays_within_its_fraction_of_the_nominal_delay() -> None:
    policy = RetryPolicy.exponential(10, jitter=0.2)
    random.seed(1234)

    delays = [policy.delay(3) for _ in range(500)]

    assert policy.nominal_delay(3) == 40
    assert all(32 <= delay <= 48 for delay in delays)
    assert min(delays) < 34
    assert max(delays) > 46


def test_full_jitter_never_gives_a_negative_delay() -> None:
    policy = RetryPolicy.fixed(5, jitter=1.0)
    random.seed(99)

    delays = [policy.delay(1) for _ in range(500)]

    assert all(0 <= delay <= 10 for delay in delays)
    assert len(set(delays)) > 400


def test_zero_retries_means_one_attempt() -> None:
    policy = RetryPolicy.fixed(1, max_retries=0)

    attempts = policy.max_attempts

    assert attempts == 1


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(
            lambda: RetryPolicy.fixed(1, max_retries=-1), "-1", id="negative-retries"
        ),
        pytest.param(
            lambda: RetryPolicy.fixed(1, max_retries=2.5),  # type: ignore[arg-type]
            "2.5",
            id="float-retries",
        ),
        pytest.param(
            lambda: RetryPolicy.fixed(1, max_retries=True), "True", id="bool-retries"
        ),
        pytest.param(lambda: RetryPolicy.fixed(-1), "-1", id="negative-seconds"),
        pytest.param(
            lambda: RetryPolicy.exponential(-2), "-2", id="negative-base-seconds"
        ),
        pytest.param(
            lambda: RetryPolicy.exponential(1, multiplier=0.5),
            "0.5",
            id="shrinking-multiplier",
        ),
        pytest.param(
            lambda: RetryPolicy.exponential(1, jitter=1.5), "1.5", id="jitter-above-1"
        ),
        pytest.param(
            lambda: RetryPolicy.exponential(1, jitter=-0.1),
            "-0.1",
            id="negative-jitter",
        ),
        pytest.param(
            lambda: RetryPolicy.exponential(1, max_seconds=-5),
            "-5",
            id="negative-max-seconds",
        ),
        pytest.param(lambda: RetryPolicy.fixed(float("nan")), "nan", id="nan-seconds"),
    ],
)
def test_invalid_retry_policy_raises_naming_the_bad_value(
    build: Any, expected: str
) -> None:
    with pytest.raises(ValueError, match="must be") as raised:
        build()

    assert expected in str(raised.value)
