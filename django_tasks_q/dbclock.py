"""Times on the database clock, which every worker and sender shares."""

from __future__ import annotations

import datetime as dt

from django.db.models import Value
from django.db.models.expressions import Combinable
from django.db.models.fields import DurationField
from django.db.models.functions import Now


def _interval(offset: float | dt.timedelta) -> Value:
    if not isinstance(offset, dt.timedelta):
        offset = dt.timedelta(seconds=offset)
    return Value(offset, output_field=DurationField())


def from_now(offset: float | dt.timedelta) -> Combinable:
    """``now + offset`` as an expression the database evaluates."""
    return Now() + _interval(offset)


def ago(offset: float | dt.timedelta) -> Combinable:
    """``now - offset`` as an expression the database evaluates."""
    return Now() - _interval(offset)
