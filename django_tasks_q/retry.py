"""How long to wait before a failed task runs again, and how often."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts.

    Build one with ``RetryPolicy.fixed()`` or ``RetryPolicy.exponential()``.
    ``max_retries`` counts runs after the first, so a task with
    ``max_retries=3`` runs at most four times.
    """

    max_retries: int
    base_seconds: float
    multiplier: float = 1.0
    max_seconds: float = 3600.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ValueError(
                f"max_retries must be an integer, not {self.max_retries!r}."
            )
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {self.max_retries}.")
        for name, lowest in (
            ("base_seconds", 0.0),
            ("max_seconds", 0.0),
            ("multiplier", 1.0),
        ):
            value = getattr(self, name)
            if not _is_number(value) or value < lowest:
                raise ValueError(
                    f"{name} must be a number >= {lowest:g}, not {value!r}."
                )
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}.")

    @classmethod
    def fixed(
        cls, seconds: float, *, max_retries: int = 3, jitter: float = 0.0
    ) -> RetryPolicy:
        """Wait the same ``seconds`` before every retry."""
        return cls(
            max_retries=max_retries,
            base_seconds=seconds,
            max_seconds=seconds,
            jitter=jitter,
        )

    @classmethod
    def exponential(
        cls,
        base_seconds: float = 1.0,
        *,
        max_retries: int = 5,
        multiplier: float = 2.0,
        max_seconds: float = 3600.0,
        jitter: float = 0.1,
    ) -> RetryPolicy:
        """Wait ``base_seconds * multiplier ** (retry - 1)``, capped at
        ``max_seconds``, each delay moved by up to ``jitter`` of itself."""
        return cls(
            max_retries=max_retries,
            base_seconds=base_seconds,
            multiplier=multiplier,
            max_seconds=max_seconds,
            jitter=jitter,
        )

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def nominal_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1 for the first), no jitter."""
        delay = self.base_seconds * self.multiplier ** (retry - 1)
        return min(delay, self.max_seconds)

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry``, with jitter applied."""
        nominal = self.nominal_delay(retry)
        if not self.jitter:
            return nominal
        spread = nominal * self.jitter
        return max(0.0, nominal + random.uniform(-spread, spread))
