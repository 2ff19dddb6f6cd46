"""Bind arguments to a task's signature and rehydrate them by annotation.

Type tags in the payload restore pydantic models, dataclasses and other
tagged values. Annotations go one step further: a parameter annotated
``Order`` accepts ``order.model_dump()`` and still receives an ``Order``;
a result annotated ``list[Point]`` comes back as points. Validation uses
pydantic's ``TypeAdapter``; annotations pydantic cannot handle are skipped.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic


def _adapter_for(annotation: Any) -> pydantic.TypeAdapter[Any] | None:
    if annotation in (inspect.Parameter.empty, Any, object) or isinstance(
        annotation, str
    ):
        return None

    # Imported only for a task that has annotations to validate: a worker
    # whose tasks have none does not load it.
    import pydantic

    try:
        return pydantic.TypeAdapter(annotation)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError):
        return None
    except (TypeError, NameError):
        return None


class TaskSignature:
    """The call signature of one task function, with cached validators."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.signature = inspect.signature(func)
        #: (number of positional arguments, keyword names) of calls that fit.
        self._fitting_shapes: set[tuple[int, tuple[str, ...]]] = set()

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` when the arguments do not fit the signature."""
        # Whether a call fits depends only on its shape, not on its values: a
        # send_many of many calls of one shape binds once.
        shape = (len(args), tuple(kwargs))
        if shape in self._fitting_shapes:
            return
        self.signature.bind(*args, **kwargs)
        self._fitting_shapes.add(shape)

    @cached_property
    def _hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.func)
        except Exception:  # Unresolvable hints only mean no validation.
            return {}

    @cached_property
    def _parameter_adapters(self) -> dict[str, pydantic.TypeAdapter[Any] | None]:
        adapters = {}
        for name, parameter in self.signature.parameters.items():
            annotation = self._hints.get(name, parameter.annotation)
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                annotation = inspect.Parameter.empty
            adapters[name] = _adapter_for(annotation)
        return adapters

    @cached_property
    def _result_adapter(self) -> pydantic.TypeAdapter[Any] | None:
        annotation = self._hints.get("return", inspect.Parameter.empty)
        if annotation is type(None):
            return None
        # For an async def the hint is already the awaited type.
        return _adapter_for(annotation)

    def rehydrate_arguments(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Validate decoded arguments against the parameter annotations.

        Raises ``TypeError`` when they no longer bind and
        ``pydantic.ValidationError`` when a value does not fit its annotation.
        """
        bound = self.signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            adapter = self._parameter_adapters.get(name)
            if adapter is not None:
                bound.arguments[name] = adapter.validate_python(value)
        return list(bound.args), dict(bound.kwargs)

    def rehydrate_result(self, value: Any) -> Any:
        """Validate a decoded result against the return annotation."""
        if self._result_adapter is None:
            return value
        return self._result_adapter.validate_python(value)
