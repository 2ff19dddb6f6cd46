"""Argument and result types of the demo tasks.

They live in a module of an installed app, so a worker may rebuild them
from the type tags stored with a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, Field


class LineItem(BaseModel):
    """One product on an order."""

    sku: str
    quantity: int = Field(gt=0)
    unit_price: Decimal


class Order(BaseModel):
    """An order to invoice."""

    order_id: int
    customer: str
    items: list[LineItem]


@dataclass(frozen=True)
class Address:
    """Where an order ships to."""

    street: str
    city: str
    country: str


class Invoice(BaseModel):
    """What ``make_invoice`` returns."""

    order_id: int
    total: Decimal
    lines: int
    ship_label: str
