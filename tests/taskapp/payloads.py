"""Argument and result types used by the sending and serialization tests.

They live at module level in an installed app, where a worker may resolve
their type tags.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import pydantic


class Point(pydantic.BaseModel):
    x: int
    y: int


class Reading(pydantic.BaseModel):
    """pydantic accepts NaN and infinity in float fields by default."""

    sensor: str
    value: float


class Order(pydantic.BaseModel):
    id: uuid.UUID
    placed_at: dt.datetime
    total: Decimal
    points: list[Point]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Planet(enum.Enum):
    """An enum whose values are tuples, as in the ``enum`` module's docs."""

    MERCURY = (3.303e23, 2.4397e6)
    EARTH = (5.976e24, 6.37814e6)


@dataclass(frozen=True)
class Address:
    street: str
    city: str


@dataclass
class Customer:
    name: str
    address: Address
    since: dt.date
    balance: Decimal
    tags: tuple[str, ...] = ()
    favourite: Color = Color.RED
    notes: dict[str, int] = field(default_factory=dict)
