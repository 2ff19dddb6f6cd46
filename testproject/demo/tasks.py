"""Tasks the demo sends; each shows one behaviour of django_tasks_q."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from django_tasks_q import RetryPolicy, TaskFailure, current_task, task

from .payloads import Address, Invoice, Order


@task
def send_welcome(user_id: int, *, template: str = "welcome") -> str:
    """Pretend to send a welcome e-mail and say what was sent."""
    return f"sent {template!r} to user {user_id}"


@task(priority=5)
def make_invoice(order: Order, ship_to: Address) -> Invoice:
    """Build an invoice from a pydantic order and a dataclass address."""
    total = sum((item.unit_price * item.quantity for item in order.items), Decimal(0))
    return Invoice(
        order_id=order.order_id,
        total=total,
        lines=len(order.items),
        ship_label=f"{order.customer}, {ship_to.street}, {ship_to.city}, "
        f"{ship_to.country}",
    )


@task
def import_contacts(rows: int, *, seconds: float = 3.0) -> int:
    """Import ``rows`` contacts in batches, reporting progress as it goes."""
    batches = 5
    for batch in range(1, batches + 1):
        time.sleep(seconds / batches)
        current_task().set_progress(batch, batches, f"imported batch {batch}")
    return rows


@task(
    retry_policy=RetryPolicy.fixed(1, max_retries=2),
    auto_retry_for=(ConnectionError,),
)
def sync_crm(account: str) -> str:
    """Sync an account; the first attempt loses its connection on purpose."""
    attempt = current_task().attempt or 1
    if attempt == 1:
        raise ConnectionError(f"CRM unreachable while syncing {account!r}")
    return f"synced {account!r} on attempt {attempt}"


@task
def charge_card(amount_cents: int) -> str:
    """Charge a card that is always declined: a failure no retry can fix."""
    raise TaskFailure(
        "CARD_DECLINED",
        f"The card was declined for {amount_cents} cents.",
        data={"amount_cents": amount_cents},
    )


@task
async def fetch_title(url: str) -> str:
    """Fetch a page title without blocking the worker's event loop."""
    await current_task().aset_progress(0, 1, f"fetching {url}")
    await asyncio.sleep(0.5)
    await current_task().aset_progress(1, 1, "fetched")
    return f"Example Domain ({url})"
