"""The ``TASKS_Q`` setting and the ``django_tasks_q`` system checks."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_q import ErrorCode, TaskSendError
from django_tasks_q.checks import (
    RECOMMENDED_SQLITE_OPTIONS,
    check_channels_order,
    check_import_sends,
    check_queue_names,
    check_settings,
    check_sqlite_options,
)
from django_tasks_q.conf import TasksQSettings, get_settings
from django_tasks_q.registry import ImportSendError, registry
from tests.taskapp.tasks.api import add

SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def ids(messages: list[CheckMessage]) -> list[str]:
    return [message.id for message in messages if message.id]


def own_ids(messages: list[CheckMessage]) -> list[str]:
    return [i for i in ids(messages) if i.startswith("django_tasks_q.")]


@contextlib.contextmanager
def databases(**aliases: dict[str, Any]) -> Iterator[None]:
    """Replace DATABASES for the checks, which only read the setting."""
    with warnings.catch_warnings():
        # Django warns that open connections keep their old settings; the
        # checks under test never connect.
        warnings.filterwarnings("ignore", "Overriding setting DATABASES")
        with override_settings(DATABASES=aliases):
            yield


def sqlite(**options: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "tasks.sqlite3",
        "OPTIONS": options,
    }


@pytest.fixture
def import_send_errors() -> Iterator[list[ImportSendError]]:
    """Give a test the registry's record of import-time sends, then restore it."""
    saved = list(registry.import_send_errors)

    yield registry.import_send_errors

    registry.import_send_errors[:] = saved


# --- conf.get_settings ------------------------------------------------------


@override_settings(TASKS_Q={})
def test_settings_default_when_the_dict_is_empty() -> None:
    resolved = get_settings()

    assert resolved == TasksQSettings()
    assert resolved.database == "default"
    assert resolved.queues == {"default": {}}
    assert resolved.default_queue == "default"
    assert resolved.poll_interval == 1.0
    assert resolved.heartbeat_interval == 5.0
    assert resolved.dead_worker_after == 30.0
    assert resolved.listen is True
    assert resolved.max_payload_bytes == 1024 * 1024
    assert resolved.drain_timeout == 30.0


def test_settings_default_when_the_setting_is_absent(
    settings: Any,
) -> None:
    if hasattr(settings, "TASKS_Q"):
        del settings.TASKS_Q

    resolved = get_settings()

    assert resolved == TasksQSettings()


@override_settings(
    TASKS_Q={
        "DATABASE": "default",
        "QUEUES": {"default": {}, "emails": {"concurrency": 2}},
        "DEFAULT_QUEUE": "emails",
        "POLL_INTERVAL": 0.25,
        "HEARTBEAT_INTERVAL": 2,
        "DEAD_WORKER_AFTER": 12.5,
        "LISTEN": False,
        "MAX_PAYLOAD_BYTES": 4096,
        "DRAIN_TIMEOUT": 3,
    }
)
def test_settings_take_every_configured_key() -> None:
    resolved = get_settings()

    assert resolved.queues == {"default": {}, "emails": {"concurrency": 2}}
    assert resolved.default_queue == "emails"
    assert resolved.poll_interval == 0.25
    assert resolved.heartbeat_interval == 2
    assert resolved.dead_worker_after == 12.5
    assert resolved.listen is False
    assert resolved.max_payload_bytes == 4096
    assert resolved.drain_timeout == 3


@override_settings(TASKS_Q={"DEFAULT_QUEUE": "bulk"})
def test_default_queue_setting_is_used_by_tasks_without_a_queue() -> None:
    queue = add.queue

    assert queue == "bulk"


def test_settings_are_read_once_and_reset_when_overridden() -> None:
    before = get_settings()

    with override_settings(TASKS_Q={"POLL_INTERVAL": 0.25}):
        inside = get_settings()
        with override_settings(TASKS_Q={"POLL_INTERVAL": 0.5}):
            nested = get_settings()
        back_inside = get_settings()
    after = get_settings()

    assert get_settings() is after
    assert inside.poll_interval == 0.25
    assert nested.poll_interval == 0.5
    assert back_inside.poll_interval == 0.25
    assert after == before


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        pytest.param({"POLL_INTERVALL": 1}, "unknown key 'POLL_INTERVALL'", id="typo"),
        pytest.param({"poll_interval": 1}, "unknown key 'poll_interval'", id="case"),
        pytest.param(
            {"ZZZ": 1, "AAA": 2}, "unknown key 'AAA'", id="first-in-sorted-order"
        ),
    ],
)
def test_unknown_key_raises_naming_it_and_the_known_keys(
    configured: dict[str, Any], expected: str
) -> None:
    with (
        override_settings(TASKS_Q=configured),
        pytest.raises(ImproperlyConfigured) as raised,
    ):
        get_settings()

    assert expected in str(raised.value)
    assert "POLL_INTERVAL, PREPARED_STATEMENTS, QUEUES" in str(raised.value)


def test_setting_that_is_not_a_dict_raises() -> None:
    with (
        override_settings(TASKS_Q=[("POLL_INTERVAL", 1)]),
        pytest.raises(ImproperlyConfigured, match="must be a dict, not list"),
    ):
        get_settings()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        *[
            pytest.param(key, value, f"TASKS_Q['{key}']", id=f"{key}-{label}")
            for key in (
                "POLL_INTERVAL",
                "HEARTBEAT_INTERVAL",
                "DEAD_WORKER_AFTER",
                "DRAIN_TIMEOUT",
            )
            for label, value in (("zero", 0), ("negative", -1), ("str", "5"))
        ],
        pytest.param("POLL_INTERVAL", True, "not True", id="POLL_INTERVAL-bool"),
        pytest.param("POLL_INTERVAL", float("nan"), "not nan", id="POLL_INTERVAL-nan"),
        pytest.param("MAX_PAYLOAD_BYTES", 0, "not 0", id="MAX_PAYLOAD_BYTES-zero"),
        pytest.param("MAX_PAYLOAD_BYTES", 1.5, "not 1.5", id="MAX_PAYLOAD_BYTES-float"),
        pytest.param(
            "MAX_PAYLOAD_BYTES", "1mb", "not '1mb'", id="MAX_PAYLOAD_BYTES-str"
        ),
        pytest.param("QUEUES", {}, "not {}", id="QUEUES-empty"),
        pytest.param("QUEUES", ["default"], "not ['default']", id="QUEUES-list"),
        pytest.param("LISTEN", "yes", "not 'yes'", id="LISTEN-str"),
        pytest.param("LISTEN", 1, "not 1", id="LISTEN-int"),
        pytest.param(
            "PREPARED_STATEMENTS", "no", "not 'no'", id="PREPARED_STATEMENTS-str"
        ),
        pytest.param(
            "COMPLETION_BATCH_WAIT", -0.1, "not -0.1", id="COMPLETION_BATCH_WAIT-neg"
        ),
        pytest.param(
            "COMPLETION_BATCH_WAIT", "2ms", "not '2ms'", id="COMPLETION_BATCH_WAIT-str"
        ),
        pytest.param(
            "COMPLETION_BATCH_WAIT", False, "not False", id="COMPLETION_BATCH_WAIT-bool"
        ),
    ],
)
def test_bad_value_raises_naming_the_key_and_value(
    key: str, value: Any, expected: str
) -> None:
    with (
        override_settings(TASKS_Q={key: value}),
        pytest.raises(ImproperlyConfigured) as raised,
    ):
        get_settings()

    assert f"TASKS_Q[{key!r}]" in str(raised.value)
    assert expected in str(raised.value)
    assert repr(value) in str(raised.value)


# --- System checks ------------------------------------------------------------


# run_checks() includes the model checks, and JSONField's asks SQLite
# whether it supports JSON.
@pytest.mark.django_db
def test_the_test_project_passes_every_check() -> None:
    messages = run_checks()

    assert own_ids(messages) == []


# run_checks() includes the model checks, and JSONField's asks SQLite
# whether it supports JSON.
@pytest.mark.django_db
def test_bad_setting_is_reported_as_e001() -> None:
    with override_settings(TASKS_Q={"POLL_INTERVAL": -1}):
        direct = check_settings()
        queue_names = check_queue_names()
        sqlite_options = check_sqlite_options()
        all_messages = run_checks()

    assert ids(direct) == ["django_tasks_q.E001"]
    assert "TASKS_Q['POLL_INTERVAL']" in direct[0].msg
    assert "-1" in direct[0].msg
    assert (queue_names, sqlite_options) == ([], [])
    assert own_ids(all_messages) == ["django_tasks_q.E001"]


def test_database_alias_missing_from_databases_is_reported_as_e001() -> None:
    with override_settings(TASKS_Q={"DATABASE": "tasks"}):
        messages = check_settings()

    assert ids(messages) == ["django_tasks_q.E001"]
    assert "TASKS_Q['DATABASE'] names 'tasks'" in messages[0].msg
    assert messages[0].hint == f"Use one of {', '.join(sorted(settings.DATABASES))}."


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        pytest.param(
            {"QUEUES": {"default": {}, "bad queue": {}}},
            "Queue name 'bad queue' in TASKS_Q['QUEUES'] is invalid.",
            id="queues",
        ),
        pytest.param(
            {"QUEUES": {"default": {}, "x" * 49: {}}},
            f"Queue name {'x' * 49!r} in TASKS_Q['QUEUES'] is invalid.",
            id="queues-too-long",
        ),
        pytest.param(
            {"DEFAULT_QUEUE": "mail/out"},
            "Queue name 'mail/out' in TASKS_Q['DEFAULT_QUEUE'] is invalid.",
            id="default-queue",
        ),
    ],
)
def test_invalid_queue_name_is_reported_as_e002(
    configured: dict[str, Any], expected: str
) -> None:
    with override_settings(TASKS_Q=configured):
        messages = check_queue_names()

    assert ids(messages) == ["django_tasks_q.E002"]
    assert messages[0].msg == expected
    assert "letters, digits" in (messages[0].hint or "")


def test_valid_queue_names_pass_e002() -> None:
    configured: dict[str, Any] = {
        "QUEUES": {"default": {}, "emails": {}, "bulk.low-2": {}}
    }

    with override_settings(TASKS_Q=configured):
        messages = check_queue_names()

    assert messages == []


def test_recorded_import_time_send_is_reported_as_e003(
    import_send_errors: list[ImportSendError],
) -> None:
    error = TaskSendError(
        ErrorCode.SEND_SUPPRESSED, "sent at import", task_name=add.name
    )
    import_send_errors.append(ImportSendError("shop.tasks", error))

    messages = check_import_sends()

    assert ids(messages) == ["django_tasks_q.E003"]
    assert "Tasks module 'shop.tasks' sends a task while it is imported" in (
        messages[0].msg
    )
    assert ".send()" in (messages[0].hint or "")


def test_module_sending_at_import_is_recorded_by_autodiscovery(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    import_send_errors: list[ImportSendError],
) -> None:
    package = tmp_path / "tq_import_sender"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(
        "from tests.taskapp.tasks.api import add\n\nadd.send(1, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = [*settings.INSTALLED_APPS, "tq_import_sender"]

    try:
        with override_settings(INSTALLED_APPS=installed):
            messages = check_import_sends()
    finally:
        for name in ("tq_import_sender.tasks", "tq_import_sender"):
            sys.modules.pop(name, None)

    assert ids(messages) == ["django_tasks_q.E003"]
    assert "'tq_import_sender.tasks'" in messages[0].msg
    recorded = import_send_errors[-1]
    assert recorded.module == "tq_import_sender.tasks"
    assert recorded.error.code == ErrorCode.SEND_SUPPRESSED
    assert recorded.error.task_name == add.name


def test_no_import_time_send_passes_e003(
    import_send_errors: list[ImportSendError],
) -> None:
    import_send_errors.clear()

    messages = check_import_sends()

    assert messages == []


def _apps_with(*names: str) -> list[str]:
    others = [app for app in settings.INSTALLED_APPS if app != "django_tasks_q"]
    return [*names, *others]


def test_channels_before_this_app_is_reported_as_e004() -> None:
    with override_settings(INSTALLED_APPS=_apps_with("channels", "django_tasks_q")):
        messages = check_channels_order()

    assert ids(messages) == ["django_tasks_q.E004"]
    assert "'channels' is listed before 'django_tasks_q'" in messages[0].msg
    assert "above 'channels'" in (messages[0].hint or "")


def test_channels_after_this_app_passes_e004() -> None:
    with override_settings(INSTALLED_APPS=_apps_with("django_tasks_q", "channels")):
        messages = check_channels_order()

    assert messages == []


def test_no_channels_passes_e004() -> None:
    messages = check_channels_order()

    assert messages == []


def test_sqlite_without_options_is_reported_as_w001() -> None:
    with databases(default=sqlite()):
        messages = check_sqlite_options()

    assert ids(messages) == ["django_tasks_q.W001"]
    message = messages[0].msg
    assert "SQLite database 'default' lacks OPTIONS" in message
    assert '"transaction_mode": "IMMEDIATE"' in message
    assert '"timeout"' in message
    assert "PRAGMA journal_mode=WAL" in message
    assert messages[0].hint == (
        f"Set DATABASES['default']['OPTIONS'] = {RECOMMENDED_SQLITE_OPTIONS}."
    )


@pytest.mark.parametrize(
    ("missing", "named", "not_named"),
    [
        pytest.param("transaction_mode", "transaction_mode", "timeout", id="mode"),
        pytest.param("timeout", '"timeout"', "transaction_mode", id="timeout"),
        pytest.param("init_command", "journal_mode=WAL", "timeout", id="wal"),
    ],
)
def test_w001_names_only_the_missing_sqlite_options(
    missing: str, named: str, not_named: str
) -> None:
    options = {k: v for k, v in SQLITE_OPTIONS.items() if k != missing}

    with databases(default=sqlite(**options)):
        messages = check_sqlite_options()

    assert ids(messages) == ["django_tasks_q.W001"]
    assert named in messages[0].msg
    assert not_named not in messages[0].msg


def test_sqlite_with_every_option_passes_w001() -> None:
    with databases(default=sqlite(**SQLITE_OPTIONS)):
        messages = check_sqlite_options()

    assert messages == []


def test_w001_reads_the_alias_that_holds_the_tasks() -> None:
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "app"}

    with (
        databases(default=postgres, tasks=sqlite()),
        override_settings(TASKS_Q={"DATABASE": "tasks"}),
    ):
        messages = check_sqlite_options()

    assert ids(messages) == ["django_tasks_q.W001"]
    assert "SQLite database 'tasks'" in messages[0].msg


def test_postgresql_passes_w001() -> None:
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "app"}

    with databases(default=postgres):
        messages = check_sqlite_options()

    assert messages == []
