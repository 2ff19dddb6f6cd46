"""The JSON wire form: round trips, rejected values and forged type tags."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from django_tasks_q.models import Task as TaskRow
from django_tasks_q.serialization import (
    TAG,
    PayloadError,
    SerializationError,
    decode,
    encode,
)
from django_tasks_q.signatures import TaskSignature
from tests.taskapp.payloads import (
    Address,
    Color,
    Customer,
    Level,
    Order,
    Planet,
    Point,
    Reading,
)
from tests.taskapp.tasks.api import (
    collect,
    describe,
    echo,
    greet,
    make_points,
    move,
)

UTC_PLUS_2 = dt.timezone(dt.timedelta(hours=2))

CUSTOMER = Customer(
    name="Ada",
    address=Address(street="1 Analytical Way", city="London"),
    since=dt.date(1843, 7, 1),
    balance=Decimal("12.50"),
    tags=("vip", "early"),
    favourite=Color.GREEN,
    notes={"visits": 3},
)

ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    placed_at=dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
    total=Decimal("19.99"),
    points=[Point(x=1, y=2), Point(x=3, y=4)],
)


def round_trip(value: Any) -> Any:
    """Encode, store as JSON text the way the database does, and decode."""
    stored = json.loads(json.dumps(encode(value)))
    return decode(stored)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(0, id="zero"),
        pytest.param(-(2**70), id="big-int"),
        pytest.param(1.5, id="float"),
        pytest.param("text ü ✓", id="str"),
        pytest.param([], id="empty-list"),
        pytest.param({}, id="empty-dict"),
        pytest.param([1, "a", None, [2.5]], id="list"),
        pytest.param({"a": [1, {"b": None}], "c": "d"}, id="dict"),
    ],
)
def test_plain_json_values_travel_untouched(value: Any) -> None:
    encoded = encode(value)

    assert encoded == value
    assert type(encoded) is type(value)
    assert decode(encoded) == value
    assert type(round_trip(value)) is type(value)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        pytest.param(
            dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC_PLUS_2),
            {TAG: "datetime", "value": "2024-05-06T07:08:09.123456+02:00"},
            id="aware-datetime",
        ),
        pytest.param(
            dt.datetime(2024, 5, 6, 7, 8, 9),
            {TAG: "datetime", "value": "2024-05-06T07:08:09"},
            id="naive-datetime",
        ),
        pytest.param(
            dt.date(2024, 2, 29), {TAG: "date", "value": "2024-02-29"}, id="date"
        ),
        pytest.param(
            dt.time(23, 59, 58, 1),
            {TAG: "time", "value": "23:59:58.000001"},
            id="time",
        ),
        pytest.param(
            dt.timedelta(days=1, seconds=2, microseconds=3),
            {TAG: "timedelta", "value": 86402.000003},
            id="timedelta",
        ),
        pytest.param(
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            {TAG: "uuid", "value": "12345678-1234-5678-1234-567812345678"},
            id="uuid",
        ),
        pytest.param(
            Decimal("1.2300"), {TAG: "decimal", "value": "1.2300"}, id="decimal"
        ),
        pytest.param((1, "a"), {TAG: "tuple", "value": [1, "a"]}, id="tuple"),
        pytest.param(
            Color.RED,
            {TAG: "enum", "type": "tests.taskapp.payloads:Color", "value": "red"},
            id="enum",
        ),
        pytest.param(
            Point(x=1, y=2),
            {
                TAG: "pydantic",
                "type": "tests.taskapp.payloads:Point",
                "value": {"x": 1, "y": 2},
            },
            id="pydantic",
        ),
        pytest.param(
            Address(street="s", city="c"),
            {
                TAG: "dataclass",
                "type": "tests.taskapp.payloads:Address",
                "value": {"street": "s", "city": "c"},
            },
            id="dataclass",
        ),
        pytest.param(
            {TAG: "x", "n": 1},
            {TAG: "dict", "value": {TAG: "x", "n": 1}},
            id="dict-with-tag-key",
        ),
    ],
)
def test_tagged_values_have_the_documented_wire_form(value: Any, wire: Any) -> None:
    encoded = encode(value)

    assert encoded == wire


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC_PLUS_2),
            id="aware-datetime",
        ),
        pytest.param(dt.datetime(2024, 5, 6, 7, 8, 9), id="naive-datetime"),
        pytest.param(dt.date(2024, 2, 29), id="date"),
        pytest.param(dt.time(23, 59, 58, 1), id="time"),
        pytest.param(dt.time(8, 30, tzinfo=UTC_PLUS_2), id="aware-time"),
        pytest.param(dt.timedelta(days=3, microseconds=7), id="timedelta"),
        pytest.param(dt.timedelta(seconds=-90), id="negative-timedelta"),
        pytest.param(uuid.uuid4(), id="uuid"),
        pytest.param(Decimal("3.14159265358979323846264338327950288"), id="decimal"),
        pytest.param((1, (2, [3, (4,)])), id="nested-tuple"),
        pytest.param(Color.GREEN, id="enum"),
        pytest.param(Level.HIGH, id="int-enum"),
        pytest.param(ORDER, id="pydantic"),
        pytest.param(CUSTOMER, id="nested-dataclass"),
        pytest.param({TAG: "pydantic", "type": "os:system"}, id="dict-with-tag-key"),
        pytest.param({"outer": {TAG: [1, (2,)]}}, id="nested-dict-with-tag-key"),
        pytest.param({"when": dt.date(2024, 1, 1), "ids": [uuid.uuid4()]}, id="mixed"),
    ],
)
def test_tagged_value_round_trips(value: Any) -> None:
    decoded = round_trip(value)

    assert decoded == value
    assert type(decoded) is type(value)


def test_aware_datetime_keeps_its_offset() -> None:
    value = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC_PLUS_2)

    decoded = round_trip(value)

    assert decoded.utcoffset() == dt.timedelta(hours=2)


def test_naive_datetime_stays_naive() -> None:
    value = dt.datetime(2024, 5, 6, 7, 8, 9)

    decoded = round_trip(value)

    assert decoded.tzinfo is None


def test_decimal_keeps_its_exponent() -> None:
    decoded = round_trip(Decimal("1.2300"))

    assert str(decoded) == "1.2300"


def test_nested_dataclass_fields_come_back_typed() -> None:
    decoded = round_trip(CUSTOMER)

    assert type(decoded.address) is Address
    assert type(decoded.since) is dt.date
    assert type(decoded.balance) is Decimal
    assert decoded.tags == ("vip", "early")
    assert decoded.favourite is Color.GREEN


def test_pydantic_model_fields_come_back_typed() -> None:
    decoded = round_trip(ORDER)

    assert type(decoded.points[0]) is Point
    assert decoded.placed_at.tzinfo is not None
    assert type(decoded.total) is Decimal


def test_enum_with_tuple_values_round_trips() -> None:
    decoded = round_trip(Planet.EARTH)

    assert decoded is Planet.EARTH


@pytest.mark.django_db
def test_arguments_round_trip_through_the_task_table() -> None:
    value = {"customer": CUSTOMER, "order": ORDER, "when": (dt.date(2024, 1, 1),)}
    handle = echo.send(value)

    row = TaskRow.objects.get(pk=handle.task_id)

    assert decode(row.args) == [value]
    assert row.kwargs == {}


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param(float("nan"), "value", id="nan"),
        pytest.param(float("inf"), "value", id="inf"),
        pytest.param([1.0, float("-inf")], "value[1]", id="in-list"),
        pytest.param({"a": {"b": float("nan")}}, "value['a']['b']", id="in-dict"),
        pytest.param((0, float("nan")), "value[1]", id="in-tuple"),
    ],
)
def test_non_finite_floats_are_rejected_with_their_path(value: Any, path: str) -> None:
    with pytest.raises(SerializationError) as raised:
        encode(value)

    assert raised.value.path == path
    assert "not a finite number" in str(raised.value)


def test_non_finite_float_inside_a_model_is_rejected() -> None:
    reading = Reading(sensor="t1", value=float("nan"))

    with pytest.raises(SerializationError) as raised:
        encode(reading, "reading")

    assert raised.value.path in {"reading.value", "reading['value']"}
    assert "not a finite number" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "path", "key"),
    [
        pytest.param({1: "a"}, "items", "1", id="int-key"),
        pytest.param({("a", "b"): 1}, "items", "('a', 'b')", id="tuple-key"),
        pytest.param({"outer": {None: 1}}, "items['outer']", "None", id="nested"),
        pytest.param([{"ok": 1}, {2.5: 1}], "items[1]", "2.5", id="in-list"),
    ],
)
def test_non_string_dict_keys_are_rejected_with_their_path(
    value: Any, path: str, key: str
) -> None:
    with pytest.raises(SerializationError) as raised:
        encode(value, "items")

    assert raised.value.path == path
    assert f"dict key {key} is not a string" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param(object(), "builtins.object", id="object"),
        pytest.param({1, 2}, "builtins.set", id="set"),
        pytest.param(b"bytes", "builtins.bytes", id="bytes"),
        # Python 3.13 moved PosixPath to pathlib._local.
        pytest.param(Path("/tmp"), "PosixPath", id="path"),
    ],
)
def test_unsupported_values_are_rejected_naming_their_type(
    value: Any, type_name: str
) -> None:
    with pytest.raises(SerializationError) as raised:
        encode([value], "args")

    assert raised.value.path == "args[0]"
    assert f"{type_name} is not JSON-serializable" in raised.value.reason


def test_classes_defined_inside_a_function_are_rejected() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(SerializationError) as raised:
        encode(Local(x=1), "item")

    assert raised.value.path == "item"
    assert "inside a function" in raised.value.reason


# --- Forged payloads ------------------------------------------------------


@pytest.fixture
def untrusted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Put an importable module on ``sys.path`` that leaves a marker when run.

    It is neither imported nor part of an installed app, so a payload naming
    it must be refused before anything imports it.
    """
    name = f"tq_untrusted_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        "import dataclasses, enum, pathlib, pydantic\n"
        f"pathlib.Path({str(marker)!r}).write_text('yes')\n"
        "class Model(pydantic.BaseModel):\n    x: int = 0\n"
        "@dataclasses.dataclass\nclass Data:\n    x: int = 0\n"
        "class Kind(enum.Enum):\n    A = 'a'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    yield name

    assert not marker.exists(), f"{name} was imported by a forged payload"
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("kind", "attribute", "value"),
    [
        pytest.param("pydantic", "Model", {"x": 1}, id="pydantic"),
        pytest.param("dataclass", "Data", {"x": 1}, id="dataclass"),
        pytest.param("enum", "Kind", "a", id="enum"),
    ],
)
def test_forged_tag_never_imports_an_untrusted_module(
    untrusted_module: str, kind: str, attribute: str, value: Any
) -> None:
    forged = {TAG: kind, "type": f"{untrusted_module}:{attribute}", "value": value}

    with pytest.raises(PayloadError, match="neither imported nor part of"):
        decode([forged])

    assert untrusted_module not in sys.modules


@pytest.mark.parametrize(
    "module",
    [
        pytest.param("tabnanny", id="stdlib-module"),
        pytest.param("email.mime.audio", id="submodule-of-imported-package"),
        pytest.param("tests.forged_module", id="project-module-outside-apps"),
    ],
)
def test_forged_tag_naming_an_unimported_module_is_refused(module: str) -> None:
    assert module not in sys.modules
    forged = {TAG: "pydantic", "type": f"{module}:Anything", "value": {}}

    with pytest.raises(PayloadError, match="is refused"):
        decode(forged)

    assert module not in sys.modules


def test_forged_tag_cannot_import_through_a_lazy_module_attribute() -> None:
    # pydantic resolves some top-level names with a module __getattr__ that
    # imports a submodule on first access.
    lazy_module = "pydantic.deprecated.tools"
    assert lazy_module not in sys.modules
    forged = {TAG: "pydantic", "type": "pydantic:parse_obj_as", "value": {}}

    with pytest.raises(PayloadError):
        decode(forged)

    assert lazy_module not in sys.modules


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        pytest.param("pydantic", "subprocess:Popen", id="popen-as-model"),
        pytest.param("dataclass", "subprocess:Popen", id="popen-as-dataclass"),
        pytest.param("enum", "subprocess:Popen", id="popen-as-enum"),
        pytest.param("dataclass", "os:system", id="function"),
        pytest.param("pydantic", "builtins:type", id="metaclass"),
        pytest.param("enum", "builtins:object", id="object"),
        pytest.param("pydantic", "django_tasks_q.models:Task", id="django-model"),
        pytest.param("dataclass", "tests.taskapp.payloads:Point", id="wrong-kind"),
        pytest.param("pydantic", "tests.taskapp.payloads:Address", id="wrong-kind-2"),
        pytest.param("pydantic", "tests.taskapp.payloads:Missing", id="missing"),
    ],
)
def test_forged_tag_naming_an_imported_non_model_is_refused(
    kind: str, path: str
) -> None:
    forged = {TAG: kind, "type": path, "value": ["ls", "-l"]}

    with pytest.raises(PayloadError, match=f"Type '{path}'"):
        decode({"arg": forged})


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({TAG: "pydantic"}, id="missing-value"),
        pytest.param({TAG: "pydantic", "value": {}}, id="missing-type"),
        pytest.param({TAG: "pydantic", "type": 7, "value": {}}, id="type-not-str"),
        pytest.param(
            {TAG: "pydantic", "type": "os.system", "value": {}}, id="type-no-colon"
        ),
        pytest.param(
            {TAG: "pydantic", "type": "a:b:c", "value": {}}, id="type-two-colons"
        ),
        pytest.param({TAG: "pickle", "value": "gASV"}, id="unknown-kind"),
        pytest.param({TAG: ["datetime"], "value": 1}, id="kind-not-str"),
        pytest.param({TAG: "datetime", "value": "yesterday"}, id="bad-datetime"),
        pytest.param({TAG: "datetime", "value": 17}, id="datetime-not-str"),
        pytest.param({TAG: "date", "value": "2024-13-01"}, id="bad-date"),
        pytest.param({TAG: "time", "value": "25:00"}, id="bad-time"),
        pytest.param({TAG: "timedelta", "value": "long"}, id="bad-timedelta"),
        pytest.param({TAG: "timedelta", "value": 1e20}, id="huge-timedelta"),
        pytest.param({TAG: "uuid", "value": "not-a-uuid"}, id="bad-uuid"),
        pytest.param({TAG: "decimal", "value": "twelve"}, id="bad-decimal"),
        pytest.param({TAG: "tuple", "value": 5}, id="tuple-not-list"),
        pytest.param({TAG: "dict", "value": [1]}, id="dict-not-dict"),
        pytest.param(
            {TAG: "enum", "type": "tests.taskapp.payloads:Color", "value": "blue"},
            id="enum-unknown-member",
        ),
        pytest.param(
            {TAG: "pydantic", "type": "tests.taskapp.payloads:Point", "value": {}},
            id="model-invalid-fields",
        ),
        pytest.param(
            {
                TAG: "dataclass",
                "type": "tests.taskapp.payloads:Address",
                "value": {"street": "s"},
            },
            id="dataclass-missing-field",
        ),
    ],
)
def test_malformed_tag_raises_payload_error(data: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        decode([data])


# --- Rehydration by annotation --------------------------------------------


def test_dict_for_a_model_parameter_arrives_as_the_model() -> None:
    signature = TaskSignature(move.func)

    args, kwargs = signature.rehydrate_arguments([{"x": 1, "y": 2}], {"dx": 3})

    assert type(args[0]) is Point
    assert move.func(*args, **kwargs) == Point(x=4, y=2)


def test_dict_for_a_dataclass_parameter_arrives_as_the_dataclass() -> None:
    signature = TaskSignature(describe.func)
    plain = {
        "name": "Ada",
        "address": {"street": "1 Analytical Way", "city": "London"},
        "since": "1843-07-01",
        "balance": "12.50",
        "tags": ["vip", "early"],
        "favourite": "green",
        "notes": {"visits": 3},
    }

    args, _ = signature.rehydrate_arguments([plain], {})

    assert args == [CUSTOMER]
    assert type(args[0].address) is Address


def test_tagged_model_for_a_model_parameter_is_kept() -> None:
    signature = TaskSignature(move.func)
    decoded = round_trip(Point(x=5, y=6))

    args, _ = signature.rehydrate_arguments([decoded], {})

    assert args == [Point(x=5, y=6)]


def test_value_that_does_not_fit_its_annotation_raises_validation_error() -> None:
    signature = TaskSignature(move.func)

    with pytest.raises(pydantic.ValidationError):
        signature.rehydrate_arguments([{"x": "left", "y": 2}], {})


def test_arguments_that_no_longer_bind_raise_type_error() -> None:
    signature = TaskSignature(greet.func)

    with pytest.raises(TypeError, match="'extra'"):
        signature.rehydrate_arguments(["Ada"], {"greeting": "Hi", "extra": 1})


def test_unannotated_and_variadic_parameters_are_left_alone() -> None:
    echo_signature = TaskSignature(echo.func)
    collect_signature = TaskSignature(collect.func)
    raw = {"x": 1, "y": 2}

    echo_args, _ = echo_signature.rehydrate_arguments([raw], {})
    collect_args, collect_kwargs = collect_signature.rehydrate_arguments(
        [raw, "2"], {"flag": raw}
    )

    assert echo_args == [raw]
    assert collect_args == [raw, "2"]
    assert collect_kwargs == {"flag": raw}


def test_keyword_only_parameters_are_rehydrated() -> None:
    def shift(*, by: dt.timedelta) -> None:
        pass

    signature = TaskSignature(shift)

    _, kwargs = signature.rehydrate_arguments([], {"by": 90})

    assert kwargs == {"by": dt.timedelta(seconds=90)}


def test_list_of_models_return_annotation_rehydrates_the_result() -> None:
    signature = TaskSignature(make_points.func)

    result = signature.rehydrate_result([{"x": 0, "y": 0}, {"x": 1, "y": -1}])

    assert result == [Point(x=0, y=0), Point(x=1, y=-1)]
    assert all(type(point) is Point for point in result)


def test_async_task_return_annotation_rehydrates_the_result() -> None:
    async def locate() -> Point:
        return Point(x=0, y=0)

    signature = TaskSignature(locate)

    result = signature.rehydrate_result({"x": 4, "y": 2})

    assert result == Point(x=4, y=2)


def test_missing_any_and_none_return_annotations_leave_the_result_alone() -> None:
    def unannotated():  # type: ignore[no-untyped-def]
        pass

    def returns_none() -> None:
        pass

    raw = {"x": 1}

    assert TaskSignature(unannotated).rehydrate_result(raw) is raw
    assert TaskSignature(echo.func).rehydrate_result(raw) is raw
    assert TaskSignature(returns_none).rehydrate_result(raw) is raw


def test_result_that_does_not_fit_its_annotation_raises_validation_error() -> None:
    signature = TaskSignature(make_points.func)

    with pytest.raises(pydantic.ValidationError):
        signature.rehydrate_result([{"x": "far"}])


def test_enum_annotation_rehydrates_a_plain_value() -> None:
    def paint(color: Color) -> None:
        pass

    signature = TaskSignature(paint)

    args, _ = signature.rehydrate_arguments(["green"], {})

    assert args == [Color.GREEN]
