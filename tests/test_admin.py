"""The admin pages list tasks and show one task's arguments, result and attempts."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from django_tasks_q.models import Task, TaskAttempt, Worker
from django_tasks_q.states import AttemptOutcome, TaskStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_task() -> Task:
    task = Task.objects.create(
        name="shop.tasks.charge",
        queue="payments",
        status=TaskStatus.FAILED,
        args=[41],
        kwargs={"currency": "EUR"},
        attempts=2,
        max_attempts=2,
        error_code="CARD_DECLINED",
        error_message="The card was declined.",
        exception_type="django_tasks_q.exceptions.TaskFailure",
        traceback="Traceback (most recent call last):\n  boom",
    )
    for number in (1, 2):
        TaskAttempt.objects.create(
            task=task,
            number=number,
            worker_id="host-1-abc",
            lease_token=uuid.uuid4(),
            outcome=AttemptOutcome.FAILED,
            error_code="CARD_DECLINED",
        )
    return task


@pytest.fixture
def completed_task() -> Task:
    return Task.objects.create(
        name="shop.tasks.receipt",
        status=TaskStatus.COMPLETED,
        result={"sent_to": "ada@example.com"},
    )


def test_task_list_shows_tasks_and_filters_by_status(
    admin_client: Client, failed_task: Task, completed_task: Task
) -> None:
    url = reverse("admin:django_tasks_q_task_changelist")

    everything = admin_client.get(url)
    failed_only = admin_client.get(url, {"status__exact": "FAILED"})

    assert everything.status_code == 200
    assert str(failed_task.id) in everything.text
    assert str(completed_task.id) in everything.text
    assert str(failed_task.id) in failed_only.text
    assert str(completed_task.id) not in failed_only.text


def test_task_list_filters_by_queue_and_name(
    admin_client: Client, failed_task: Task, completed_task: Task
) -> None:
    url = reverse("admin:django_tasks_q_task_changelist")

    by_queue = admin_client.get(url, {"queue": "payments"})
    by_name = admin_client.get(url, {"name": "shop.tasks.receipt"})

    assert str(failed_task.id) in by_queue.text
    assert str(completed_task.id) not in by_queue.text
    assert str(completed_task.id) in by_name.text
    assert str(failed_task.id) not in by_name.text


def test_task_list_searches_by_id(
    admin_client: Client, failed_task: Task, completed_task: Task
) -> None:
    url = reverse("admin:django_tasks_q_task_changelist")

    response = admin_client.get(url, {"q": str(completed_task.id)})

    assert str(completed_task.id) in response.text
    assert str(failed_task.id) not in response.text


def test_task_detail_shows_arguments_error_and_attempts(
    admin_client: Client, failed_task: Task
) -> None:
    url = reverse("admin:django_tasks_q_task_change", args=[failed_task.pk])

    response = admin_client.get(url)

    assert response.status_code == 200
    assert "&quot;currency&quot;: &quot;EUR&quot;" in response.text
    assert "CARD_DECLINED" in response.text
    assert "The card was declined." in response.text
    assert "Traceback (most recent call last):" in response.text
    assert response.text.count("host-1-abc") == 2


def test_task_detail_shows_result(admin_client: Client, completed_task: Task) -> None:
    url = reverse("admin:django_tasks_q_task_change", args=[completed_task.pk])

    response = admin_client.get(url)

    assert "&quot;sent_to&quot;: &quot;ada@example.com&quot;" in response.text


def test_task_detail_is_read_only(admin_client: Client, completed_task: Task) -> None:
    change_url = reverse("admin:django_tasks_q_task_change", args=[completed_task.pk])
    add_url = reverse("admin:django_tasks_q_task_add")

    posted = admin_client.post(change_url, {"status": "FAILED"})
    added = admin_client.get(add_url)

    completed_task.refresh_from_db()
    assert posted.status_code == 403
    assert added.status_code == 403
    assert completed_task.status == TaskStatus.COMPLETED


def test_worker_list_shows_workers(admin_client: Client) -> None:
    Worker.objects.create(
        id="web-7-f00d", hostname="web", pid=7, queues=["default"], concurrency=4
    )

    response = admin_client.get(reverse("admin:django_tasks_q_worker_changelist"))

    assert response.status_code == 200
    assert "web-7-f00d" in response.text


def test_task_list_search_with_a_non_uuid_finds_nothing(
    admin_client: Client, completed_task: Task
) -> None:
    url = reverse("admin:django_tasks_q_task_changelist")

    response = admin_client.get(url, {"q": "not-a-uuid"})

    assert response.status_code == 200
    assert str(completed_task.id) not in response.text
