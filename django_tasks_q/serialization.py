"""The JSON wire form of task arguments and results.

Plain JSON values travel as they are. Other supported values travel as a
tagged object ``{"__tq__": <kind>, ...}``:

=============  ==================================================
kind           fields
=============  ==================================================
``datetime``   ``value``: ISO 8601 string (offset kept if aware)
``date``       ``value``: ISO 8601 date
``time``       ``value``: ISO 8601 time
``timedelta``  ``value``: seconds as a number
``uuid``       ``value``: canonical string
``decimal``    ``value``: string
``tuple``      ``value``: list of encoded items
``enum``       ``type``: ``module:QualName``, ``value``: the member value
``pydantic``   ``type``: ``module:QualName``, ``value``: ``model_dump(mode="json")``
``dataclass``  ``type``: ``module:QualName``, ``value``: dict of encoded fields
``dict``       ``value``: a dict that itself has a ``__tq__`` key
=============  ==================================================

Decoding never imports an arbitrary module: a ``type`` is resolved only in
a module that is already imported or belongs to an installed app, and only
to a pydantic model, a dataclass or an enum. Anything else raises
``PayloadError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import importlib
import math
import sys
import uuid
from decimal import Decimal
from typing import Any

from django.apps import apps

TAG = "__tq__"

JSONValue = Any


class SerializationError(ValueError):
    """A value cannot be encoded; ``path`` says where it sits, e.g. ``items[2]``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class PayloadError(ValueError):
    """Stored data cannot be decoded back into Python values."""


def type_path(cls: type) -> str:
    """Return ``module:QualName`` for an importable class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_importable(cls: type, path: str) -> None:
    if cls.__module__ == "__main__":
        raise SerializationError(
            path,
            f"{cls.__qualname__} is defined in __main__, where a worker cannot "
            "find it; move it into an importable module",
        )
    if "<locals>" in cls.__qualname__:
        raise SerializationError(
            path,
            f"{cls.__qualname__} is defined inside a function, where a worker "
            "cannot find it; define it at module level",
        )


def encode(value: Any, path: str = "value") -> JSONValue:
    """Turn ``value`` into JSON-compatible data, tagging non-JSON types."""
    # Enums first: members of str and int enums are also str and int.
    if isinstance(value, enum.Enum):
        _check_importable(type(value), path)
        return {
            TAG: "enum",
            "type": type_path(type(value)),
            "value": encode(value.value, f"{path}.value"),
        }

    if value is None or isinstance(value, bool | str | int):
        return value

    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(path, f"{value!r} is not a finite number")
        return value

    if isinstance(value, list):
        return [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]

    if isinstance(value, tuple):
        items = [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return {TAG: "tuple", "value": items}

    if isinstance(value, dict):
        return _encode_dict(value, path)

    pydantic = _loaded_pydantic()
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        _check_importable(type(value), path)
        return {
            TAG: "pydantic",
            "type": type_path(type(value)),
            # Encoded again: pydantic lets NaN and infinity through.
            "value": encode(value.model_dump(mode="json"), path),
        }

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _check_importable(type(value), path)
        fields = {
            f.name: encode(getattr(value, f.name), f"{path}.{f.name}")
            for f in dataclasses.fields(value)
        }
        return {TAG: "dataclass", "type": type_path(type(value)), "value": fields}

    return _encode_scalar(value, path)


def _encode_dict(value: dict[Any, Any], path: str) -> JSONValue:
    encoded = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SerializationError(
                path, f"dict key {key!r} is not a string, which JSON requires"
            )
        encoded[key] = encode(item, f"{path}[{key!r}]")

    if TAG in encoded:
        return {TAG: "dict", "value": encoded}
    return encoded


def _encode_scalar(value: Any, path: str) -> JSONValue:
    if isinstance(value, dt.datetime):
        return {TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {TAG: "date", "value": value.isoformat()}
    if isinstance(value, dt.time):
        return {TAG: "time", "value": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {TAG: "timedelta", "value": value.total_seconds()}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "value": str(value)}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "value": str(value)}

    raise SerializationError(
        path,
        f"{type(value).__module__}.{type(value).__qualname__} is not "
        "JSON-serializable; pass plain data, a pydantic model or a dataclass",
    )


def decode(data: JSONValue) -> Any:
    """Turn stored JSON back into Python values; raise ``PayloadError``."""
    if isinstance(data, list):
        return [decode(item) for item in data]

    if not isinstance(data, dict):
        return data

    if TAG not in data:
        return {key: decode(item) for key, item in data.items()}

    try:
        return _decode_tagged(data)
    except PayloadError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
        raise PayloadError(f"Cannot decode {data.get(TAG)!r} value: {exc}") from exc


def _decode_tagged(data: dict[str, Any]) -> Any:
    kind = data[TAG]
    value = data["value"]

    if kind == "dict":
        return {key: decode(item) for key, item in value.items()}
    if kind == "tuple":
        return tuple(decode(item) for item in value)
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "time":
        return dt.time.fromisoformat(value)
    if kind == "timedelta":
        return dt.timedelta(seconds=value)
    if kind == "uuid":
        return uuid.UUID(value)
    if kind == "decimal":
        return Decimal(value)

    if kind == "enum":
        enum_class = resolve_type(data["type"], kind)
        return enum_class(decode(value))
    if kind == "pydantic":
        model_class = resolve_type(data["type"], kind)
        return model_class.model_validate(decode(value))
    if kind == "dataclass":
        dataclass_type = resolve_type(data["type"], kind)
        fields = {key: decode(item) for key, item in value.items()}
        import pydantic

        return pydantic.TypeAdapter(dataclass_type).validate_python(fields)

    raise PayloadError(f"Unknown type tag {kind!r}.")


def _loaded_pydantic() -> Any:
    """pydantic, or ``None`` while nothing in the process has imported it.

    No value can be a pydantic model before pydantic is imported, so a
    project whose tasks never use it does not pay the memory of loading it.
    """
    return sys.modules.get("pydantic")


def _module_is_trusted(module_name: str) -> bool:
    if module_name in sys.modules:
        return True
    return any(
        module_name == config.name or module_name.startswith(config.name + ".")
        for config in apps.get_app_configs()
    )


def resolve_type(path: Any, kind: str) -> Any:
    """Find the class named by a type tag without trusting the payload."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise PayloadError(f"Malformed type reference {path!r}.")

    module_name, qualname = path.split(":")
    if not _module_is_trusted(module_name):
        raise PayloadError(
            f"Type {path!r} is refused: module {module_name!r} is neither "
            "imported nor part of an installed app."
        )

    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PayloadError(f"Type {path!r} cannot be found: {exc}.") from exc

    for attribute in qualname.split("."):
        # vars(), not getattr(): a module's __getattr__ may import more modules.
        namespace = vars(target) if hasattr(target, "__dict__") else {}
        if attribute not in namespace:
            raise PayloadError(f"Type {path!r} cannot be found.")
        target = namespace[attribute]

    if not _is_kind(target, kind):
        raise PayloadError(f"Type {path!r} is not a {kind} class.")
    return target


def _is_kind(target: Any, kind: str) -> bool:
    if not isinstance(target, type):
        return False
    if kind == "pydantic":
        pydantic = _loaded_pydantic()
        return pydantic is not None and issubclass(target, pydantic.BaseModel)
    if kind == "dataclass":
        return dataclasses.is_dataclass(target)
    if kind == "enum":
        return issubclass(target, enum.Enum)
    return False
