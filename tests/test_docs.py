"""Run the examples of ``docs/`` and check the docs against the code.

The pages follow these conventions, summed up in ``docs/index.md``:

- A ````` ```python ````` block is an example: the blocks of a page run in
  order in one namespace, against a real worker. The only change made to
  them is that ``from myapp.tasks import ...`` imports from
  ``tests.taskapp.tasks.docs``. A block with a top-level ``await`` runs on an
  event loop.
- A ````` ```python title="myapp/tasks.py" ````` block shows task code: each
  of its statements must be one of ``tests/taskapp/tasks/docs.py``, the
  module the worker runs.
- A ````` ```python title="settings.py" ````` block runs alone, and the
  page's test checks the settings it defines.
- In a ````` ```shell ````` block, every ``python manage.py runworker`` line
  is started for real, with ``--burst`` so that it ends.
- A block right after a ``<!-- not-run -->`` line is only compiled.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import inspect
import json
import re
import shlex
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management.base import CommandParser
from django.test import override_settings

from django_tasks_q import (
    ErrorCode,
    RetryPolicy,
    TaskError,
    TaskRegistrationError,
    TaskSendError,
    TaskStatus,
)
from django_tasks_q.checks import (
    RECOMMENDED_SQLITE_OPTIONS,
    check_queue_names,
    check_settings,
    check_sqlite_options,
)
from django_tasks_q.codes import NEVER_RETRIED
from django_tasks_q.conf import TasksQSettings, get_settings
from django_tasks_q.management.commands.runworker import Command as RunWorkerCommand
from django_tasks_q.models import Task as TaskRow
from django_tasks_q.models import TaskAttempt
from django_tasks_q.models import Worker as WorkerRow
from django_tasks_q.registry import registry
from tests.helpers import RunWorker, StartWorker, WorkerProcess, wait_until
from tests.taskapp.tasks import docs as docs_tasks

REPO_DIR = Path(__file__).resolve().parent.parent
DOCS_DIR = REPO_DIR / "docs"
PAGES = sorted(path.name for path in DOCS_DIR.glob("*.md"))

DOCS_MODULE = "tests.taskapp.tasks.docs"
EXAMPLE_MODULE = "myapp.tasks"
MODULE_TITLE = "myapp/tasks.py"
SETTINGS_TITLE = "settings.py"
NOT_RUN = "<!-- not-run -->"

#: The queues the docs' examples send to.
WORKER_QUEUES = "default,billing,bulk"

FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*(?P<attrs>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
EXAMPLE_IMPORT = re.compile(rf"^(\s*from ){re.escape(EXAMPLE_MODULE)}( import )", re.M)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    title: str | None
    not_run: bool
    code: str

    @property
    def kind(self) -> str:
        """``run``, ``module``, ``settings``, ``not-run`` or the fence's language."""
        if self.lang != "python":
            return self.lang
        if self.not_run:
            return "not-run"
        if self.title is None:
            return "run"
        return {MODULE_TITLE: "module", SETTINGS_TITLE: "settings"}[self.title]


def read_blocks(page: str) -> list[Block]:
    lines = (DOCS_DIR / page).read_text(encoding="utf-8").splitlines()
    blocks = []
    previous = ""
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue

        start = index
        index += 1
        while lines[index] != "```":
            index += 1
        title = TITLE.search(match["attrs"])
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                lang=match["lang"],
                title=title["title"] if title else None,
                not_run=previous == NOT_RUN,
                code="\n".join(lines[start + 1 : index]) + "\n",
            )
        )
        previous = ""
        index += 1
    return blocks


def blocks_of(page: str, kind: str) -> list[Block]:
    return [block for block in read_blocks(page) if block.kind == kind]


def compile_block(block: Block, code: str | None = None) -> Any:
    return compile(
        block.code if code is None else code,
        f"docs/{block.page}:{block.line}",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )


async def _run_async(code: Any, namespace: dict[str, Any]) -> None:
    await eval(code, namespace)


def run_examples(page: str, worker: WorkerProcess | None = None) -> dict[str, Any]:
    """Run the example blocks of ``page`` in order and return their namespace."""
    namespace: dict[str, Any] = {"__name__": "docs_examples"}
    for block in blocks_of(page, "run"):
        code = compile_block(
            block, EXAMPLE_IMPORT.sub(rf"\1{DOCS_MODULE}\2", block.code)
        )
        try:
            if code.co_flags & inspect.CO_COROUTINE:
                async_to_sync(_run_async)(code, namespace)
            else:
                exec(code, namespace)
        except Exception as exc:
            exc.add_note(f"In the block at docs/{page}:{block.line}.")
            if worker is not None:
                exc.add_note(f"Worker output:\n{worker.output()}")
            raise
    return namespace


def run_settings(block: Block, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = dict(names)
    exec(compile_block(block), namespace)
    return namespace


def table_rows(page: str) -> list[list[str]]:
    """Return the cells of every table row of ``page``, header rows included."""
    rows = []
    for line in (DOCS_DIR / page).read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def first_column(page: str) -> set[str]:
    return {row[0].strip("`") for row in table_rows(page)}


@pytest.fixture
def docs_worker(start_worker: StartWorker) -> WorkerProcess:
    """Start a worker on the docs' queues and wait until it has registered."""
    worker = start_worker("--queues", WORKER_QUEUES, "--poll-interval", "0.1")

    def ready() -> bool:
        assert worker.process.poll() is None, worker.output()
        return WorkerRow.objects.filter(stopped_at=None).exists()

    wait_until(ready, timeout=30, message="the docs worker to register")
    return worker


def _seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


# The pages as a whole


def test_index_links_every_page() -> None:
    index = (DOCS_DIR / "index.md").read_text(encoding="utf-8")

    linked = {match["target"] for match in LINK.finditer(index)}

    assert linked >= {page for page in PAGES if page != "index.md"}


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: str) -> set[str]:
    text = (DOCS_DIR / page).read_text(encoding="utf-8")
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line[:1] == "#"}


@pytest.mark.parametrize("page", PAGES)
def test_docs_links_resolve(page: str) -> None:
    text = (DOCS_DIR / page).read_text(encoding="utf-8")

    for match in LINK.finditer(text):
        target, _, anchor = match["target"].partition("#")
        target = target or page
        assert (DOCS_DIR / target).is_file(), f"{page} links to missing {target}"
        if anchor:
            assert anchor in _anchors(target), f"{page} links to {target}#{anchor}"


@pytest.mark.parametrize("page", PAGES)
def test_docs_never_mention_issues(page: str) -> None:
    text = (DOCS_DIR / page).read_text(encoding="utf-8")

    assert not re.search(r"\bissues?\b|#\d+", text, re.IGNORECASE)


@pytest.mark.parametrize("page", PAGES)
def test_docs_python_blocks_compile(page: str) -> None:
    blocks = [block for block in read_blocks(page) if block.lang == "python"]

    for block in blocks:
        assert block.kind in {"run", "module", "settings", "not-run"}
        compile_block(block)


def test_docs_pages_with_examples_have_tests() -> None:
    pages = {page for page in PAGES if blocks_of(page, "run")}

    assert pages == set(PAGE_TESTS)


def _top_level(source: str) -> tuple[set[tuple[Any, ...]], dict[str, str]]:
    """Split module source into its imports and its other statements."""
    imports: set[tuple[Any, ...]] = set()
    statements: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            imports.update((None, alias.name, alias.asname) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.update((node.module, a.name, a.asname) for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            statements[node.name] = ast.dump(node)
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            statements[ast.unparse(node)] = ast.dump(node)
    return imports, statements


def test_docs_task_code_is_the_code_the_worker_runs() -> None:
    module_imports, module_statements = _top_level(
        Path(docs_tasks.__file__).read_text(encoding="utf-8")
    )
    shown: set[str] = set()

    for page in PAGES:
        for block in blocks_of(page, "module"):
            imports, statements = _top_level(block.code)
            where = f"docs/{page}:{block.line}"
            assert imports <= module_imports, where
            for name, dump in statements.items():
                assert module_statements.get(name) == dump, f"{where}: {name}"
            shown.update(statements)

    assert shown == set(module_statements)


# getting-started.md


@pytest.mark.django_db(transaction=True)
def test_getting_started_examples(
    docs_worker: WorkerProcess, admin_client: Any
) -> None:
    (apps_block,) = blocks_of("getting-started.md", "settings")
    installed = run_settings(apps_block)["INSTALLED_APPS"]

    namespace = run_examples("getting-started.md", docs_worker)

    assert installed.index("django_tasks_q") < installed.index("myapp")
    assert namespace["result"].ok == "Sent the 'welcome' email to user 42."

    task_id = namespace["handle"].task_id
    changelist = admin_client.get("/admin/django_tasks_q/task/")
    change = admin_client.get(f"/admin/django_tasks_q/task/{task_id}/change/")
    workers = admin_client.get("/admin/django_tasks_q/worker/")
    add = admin_client.get("/admin/django_tasks_q/task/add/")
    assert changelist.status_code == change.status_code == workers.status_code == 200
    assert docs_tasks.send_welcome.name in change.content.decode()
    assert add.status_code == 403


# defining-tasks.md


@pytest.mark.django_db(transaction=True)
def test_defining_tasks_examples(docs_worker: WorkerProcess) -> None:
    namespace = run_examples("defining-tasks.md", docs_worker)

    assert namespace["charged"].ok == "Charged 19.99 for order 1001."
    assert namespace["rates"].ok == {"EUR": 1.08}
    assert namespace["fetching"].info().attempts == 3
    assert namespace["status"].ok == 200
    assert isinstance(namespace["duplicate"], TaskRegistrationError)
    assert "'billing.charge' is already used" in str(namespace["duplicate"])
    assert registry.get("billing.charge") is docs_tasks.charge
    assert namespace["text"] == "Sent the 'reminder' email to user 7."
    assert namespace["status_now"] == 200
    assert namespace["refused"].err.error_code == "INSECURE_URL"
    assert namespace["refused"].err.data == {"url": "http://example.com/feed.xml"}
    assert namespace["resized"].ok == 3
    assert namespace["resizing"].info().progress == {
        "done": 3,
        "total": 3,
        "message": "Resized c.png",
    }


def test_defining_tasks_options_have_the_documented_defaults() -> None:
    welcome = docs_tasks.send_welcome
    charge = docs_tasks.charge

    assert welcome.name == f"{DOCS_MODULE}.send_welcome"
    assert (welcome.queue, welcome.priority, welcome.timeout) == ("default", 0, None)
    assert (welcome.retry_policy, welcome.auto_retry_for) == (None, ())
    assert (charge.name, charge.queue, charge.priority) == (
        "billing.charge",
        "billing",
        10,
    )
    assert (charge.max_attempts, charge.timeout) == (6, 30)


def _keyword_defaults(func: Callable[..., Any]) -> dict[str, Any]:
    parameters = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def test_defining_tasks_retry_policy_defaults() -> None:
    assert _keyword_defaults(RetryPolicy.fixed) == {"max_retries": 3, "jitter": 0.0}
    assert _keyword_defaults(RetryPolicy.exponential) == {
        "base_seconds": 1.0,
        "max_retries": 5,
        "multiplier": 2.0,
        "max_seconds": 3600.0,
        "jitter": 0.1,
    }


# sending-tasks.md


@pytest.mark.django_db(transaction=True)
def test_sending_tasks_examples(docs_worker: WorkerProcess) -> None:
    namespace = run_examples("sending-tasks.md", docs_worker)

    assert namespace["welcomed"].ok == "Sent the 'welcome-back' email to user 42."
    assert namespace["async_welcomed"].ok == "Sent the 'welcome' email to user 43."

    later = namespace["info"]
    assert later.status == "PENDING"
    assert abs(_seconds(later.run_after - later.enqueued_at) - 300) < 1
    in_an_hour = namespace["in_an_hour"].info()
    assert abs(_seconds(in_an_hour.run_after - in_an_hour.enqueued_at) - 3600) < 1

    urgent = namespace["urgent"]
    assert urgent.get(timeout_ms=5000).ok == "Sent the 'welcome' email to user 44."
    assert (urgent.info().queue, urgent.info().priority) == ("bulk", 50)
    tonight = namespace["tonight"].info()
    assert tonight.status == "PENDING"
    assert abs(_seconds(tonight.good_until - tonight.enqueued_at) - 12 * 3600) < 1
    assert namespace["expired"].err.error_code == ErrorCode.TASK_EXPIRED

    results = [handle.get(timeout_ms=0) for handle in namespace["handles"]]
    assert namespace["texts"] == [result.ok for result in results], results
    assert namespace["texts"] == [
        "Sent the 'welcome' email to user 1.",
        "Sent the 'digest' email to user 2.",
        "Sent the 'welcome' email to user 3.",
    ]
    assert namespace["inside"].err.error_code == ErrorCode.TASK_NOT_COMMITTED
    assert namespace["after"].ok == "Sent the 'welcome' email to user 45."
    assert namespace["undone"].get(timeout_ms=0).err.error_code == "TASK_NOT_FOUND"

    shipped = namespace["shipped"].get(timeout_ms=0)
    assert shipped.ok == "2 item(s) of order 123 go to Lyon."
    assert namespace["refused"].code == ErrorCode.VALIDATION_FAILED
    assert namespace["refused"].parameter == "user_id"
    by_id = namespace["by_id"].get(timeout_ms=5000)
    assert by_id.ok == "Sent the 'welcome' email to user 42."
    assert namespace["too_big"].parameter == "template"


def test_sending_tasks_module_level_send_is_suppressed() -> None:
    (block,) = blocks_of("sending-tasks.md", "not-run")
    send_line = next(line for line in block.code.splitlines() if ".send()" in line)

    with registry.suppress_sends(), pytest.raises(TaskSendError) as raised:
        exec(send_line, {"warm_cache": docs_tasks.generate_report})

    assert raised.value.code == ErrorCode.SEND_SUPPRESSED


@pytest.mark.django_db(transaction=True)
def test_sending_tasks_send_many_validates_every_call_first() -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        (("one", "two", "three"), {}),
    ]

    with pytest.raises(TaskSendError) as raised:
        docs_tasks.send_welcome.send_many(calls)

    assert raised.value.code == ErrorCode.VALIDATION_FAILED
    assert not TaskRow.objects.exists()


# retrieving-results.md


@pytest.mark.django_db(transaction=True)
def test_retrieving_results_examples(docs_worker: WorkerProcess) -> None:
    namespace = run_examples("retrieving-results.md", docs_worker)

    handle = namespace["handle"]
    assert namespace["early"].err.error_code == ErrorCode.WAIT_TIMEOUT
    assert namespace["late"].ok == "crunched"
    assert handle.get(timeout_ms=0) is namespace["late"]
    assert namespace["crunched"].ok == "crunched"

    failed = namespace["failed"]
    assert isinstance(failed.err, TaskError)
    assert failed.err.code == ErrorCode.UNHANDLED_EXCEPTION
    assert failed.err.exception_type == "builtins.ZeroDivisionError"
    assert "ZeroDivisionError" in (failed.err.traceback or "")
    assert namespace["unwrap_error"].error == failed.err

    details = namespace["details"]
    assert (details.status, details.attempts, details.result.ok) == (
        "COMPLETED",
        1,
        "crunched",
    )
    assert namespace["again"] == namespace["same"]
    assert namespace["again"].ok == "crunched"
    assert namespace["unknown"].err.error_code == ErrorCode.TASK_NOT_FOUND


# workers.md


@pytest.mark.django_db(transaction=True)
def test_workers_examples() -> None:
    namespace = run_examples("workers.md")

    assert namespace["delays"] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert namespace["policy"].max_attempts == 6
    assert namespace["cancelled"].err.error_code == ErrorCode.TASK_CANCELLED
    assert TaskRow.objects.get(pk=namespace["export"].task_id).attempts == 0


def _runworker_options() -> list[str]:
    parser = CommandParser(add_help=False)
    RunWorkerCommand().add_arguments(parser)
    return [option for action in parser._actions for option in action.option_strings]


def test_workers_documents_every_runworker_option() -> None:
    documented = first_column("workers.md")

    assert set(_runworker_options()) <= documented


def _runworker_commands() -> list[Any]:
    commands = []
    for page in PAGES:
        for block in blocks_of(page, "shell"):
            for line in block.code.splitlines():
                words = shlex.split(line)
                if words[:3] == ["python", "manage.py", "runworker"]:
                    commands.append(pytest.param(words[3:], id=f"{page}:{line}"))
    return commands


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("arguments", _runworker_commands())
def test_docs_runworker_commands_run(
    run_worker: RunWorker, arguments: list[str]
) -> None:
    burst = [] if "--burst" in arguments else ["--burst"]

    finished = run_worker(*arguments, *burst)

    assert finished.returncode == 0, finished.stderr
    assert re.search(r"Worker id=\S+ stopped", finished.stderr), finished.stderr


# configuration.md


def test_configuration_settings_block_is_valid() -> None:
    (block,) = blocks_of("configuration.md", "settings")
    configured = run_settings(block)["TASKS_Q"]

    with override_settings(TASKS_Q=configured):
        resolved = get_settings()
        errors = check_settings() + check_queue_names()

    assert list(resolved.queues) == ["default", "emails", "billing"]
    assert (resolved.poll_interval, resolved.max_payload_bytes) == (0.5, 262144)
    assert errors == []


def test_configuration_documents_every_setting_and_default() -> None:
    rows = {row[0].strip("`"): row for row in table_rows("configuration.md")}

    for field in dataclasses.fields(TasksQSettings):
        row = rows[field.name.upper()]
        default = ast.literal_eval(row[2].split("`")[1])
        assert default == getattr(TasksQSettings(), field.name), field.name


def test_configuration_documents_every_check_id() -> None:
    source = Path(inspect.getfile(check_settings)).read_text(encoding="utf-8")
    ids = set(re.findall(r"django_tasks_q\.[EW]\d{3}", source))

    assert ids
    assert ids <= first_column("configuration.md")


# serialization.md


@pytest.mark.django_db(transaction=True)
def test_serialization_examples(docs_worker: WorkerProcess) -> None:
    (wire_form,) = blocks_of("serialization.md", "json")
    expected = json.loads(wire_form.code.replace(EXAMPLE_MODULE, DOCS_MODULE))

    namespace = run_examples("serialization.md", docs_worker)

    assert namespace["stored"] == expected
    assert namespace["result"] == docs_tasks.Order(id=7, items=["tea", "gift"])
    assert isinstance(namespace["result"], docs_tasks.Order)
    plain = namespace["from_plain_data"].get(timeout_ms=0)
    assert plain.ok == docs_tasks.Order(id=8, items=["card"])


def test_serialization_documents_every_type_tag() -> None:
    from django_tasks_q import serialization

    kinds = set(re.findall(r"^``(\w+)``\s+``", serialization.__doc__ or "", re.M))

    assert kinds
    assert kinds == first_column("serialization.md") - {"__tq__"}


# error-codes.md


@pytest.mark.django_db(transaction=True)
def test_error_codes_examples(docs_worker: WorkerProcess) -> None:
    namespace = run_examples("error-codes.md", docs_worker)

    assert namespace["outcome"].err.error_code == ErrorCode.UNHANDLED_EXCEPTION


def test_error_codes_table_lists_every_code_once() -> None:
    rows = table_rows("error-codes.md")[1:]
    codes = [row[0].strip("`") for row in rows]

    assert sorted(codes) == sorted(code.value for code in ErrorCode)


def test_error_codes_table_marks_the_never_retried_codes() -> None:
    never = {
        row[0].strip("`") for row in table_rows("error-codes.md") if row[4] == "Never"
    }

    assert never == set(NEVER_RETRIED)


# databases.md


def _sqlite_warnings(databases: dict[str, Any]) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Overriding DATABASES is only read here.
        with override_settings(DATABASES=databases, TASKS_Q={}):
            return check_sqlite_options()


def test_databases_settings_blocks() -> None:
    sqlite_block, postgres_block, _ = blocks_of("databases.md", "settings")
    sqlite = run_settings(sqlite_block, BASE_DIR=Path("/srv/myproject"))["DATABASES"]
    postgres = run_settings(postgres_block)["DATABASES"]
    bare = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}

    assert sqlite["default"]["OPTIONS"] == json.loads(RECOMMENDED_SQLITE_OPTIONS)
    assert _sqlite_warnings(sqlite) == []
    assert _sqlite_warnings(postgres) == []
    assert [w.id for w in _sqlite_warnings(bare)] == ["django_tasks_q.W001"]


def test_databases_pooler_block_turns_off_what_a_pooler_breaks() -> None:
    *_, pooler_block = blocks_of("databases.md", "settings")
    pooler = run_settings(pooler_block)

    assert pooler["DATABASES"]["default"]["DISABLE_SERVER_SIDE_CURSORS"] is True
    with override_settings(TASKS_Q=pooler["TASKS_Q"]):
        assert get_settings().listen is False


@pytest.mark.django_db
def test_databases_pruning_example_deletes_only_old_finished_tasks() -> None:
    from django.utils import timezone

    def finished(days_ago: int) -> TaskRow:
        row = TaskRow.objects.create(
            name="noop",
            status=TaskStatus.COMPLETED,
            finished_at=timezone.now() - dt.timedelta(days=days_ago),
        )
        TaskAttempt.objects.create(
            task=row, number=1, worker_id="w", lease_token=uuid.uuid4()
        )
        return row

    old = [finished(days_ago=8) for _ in range(3)]
    recent = finished(days_ago=1)
    pending = TaskRow.objects.create(name="noop")

    run_examples("databases.md")

    assert set(TaskRow.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
    assert not TaskAttempt.objects.filter(task_id__in=[row.pk for row in old]).exists()
    assert TaskAttempt.objects.filter(task=recent).exists()


def test_databases_documents_every_index() -> None:
    text = (DOCS_DIR / "databases.md").read_text(encoding="utf-8")

    for index in TaskRow._meta.indexes:
        assert f"`{index.name}`" in text


PAGE_TESTS = {
    "getting-started.md": test_getting_started_examples,
    "defining-tasks.md": test_defining_tasks_examples,
    "sending-tasks.md": test_sending_tasks_examples,
    "retrieving-results.md": test_retrieving_results_examples,
    "workers.md": test_workers_examples,
    "serialization.md": test_serialization_examples,
    "error-codes.md": test_error_codes_examples,
    "databases.md": test_databases_pruning_example_deletes_only_old_finished_tasks,
}
