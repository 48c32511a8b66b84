"""Actions: the agent's vocabulary at the boundary. Each is a typed Python function.

The function's signature is the action's schema: a pydantic model is built from its parameters and
their annotations, so validation, coercion and the JSON schema sent to the model as a tool all come
from one place. Flags: ``critical`` (any divergence on it fails the gate), ``pure`` (safe to run again
in a closed-loop replay), ``rounding`` (field -> decimals applied when normalising).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

Handler = Callable[..., Any | Awaitable[Any]]


@dataclass(frozen=True)
class FieldError:
    """One argument that failed validation: where, and why."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class InvalidArguments(Exception):
    """Arguments that do not match an action's schema; carries the field errors."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@dataclass(frozen=True)
class ActionSpec:
    """One action of a boundary: its name, handler, argument model and flags."""

    name: str
    handler: Handler
    model: type[BaseModel]
    description: str = ""
    critical: bool = False
    pure: bool = False
    rounding: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_function(
        cls,
        fn: Handler,
        *,
        name: str | None = None,
        critical: bool = False,
        pure: bool = False,
        rounding: Mapping[str, int] | None = None,
        description: str | None = None,
    ) -> ActionSpec:
        """Build the spec from ``fn``'s signature; every parameter needs an annotation."""
        sig = inspect.signature(fn)
        hints = inspect.get_annotations(fn, eval_str=True)
        fields: dict[str, Any] = {}
        for param in sig.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"action {fn.__name__}: *args/**kwargs cannot be part of a schema")
            if param.name not in hints:
                raise TypeError(f"action {fn.__name__}: parameter {param.name!r} needs a type annotation")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], default)
        action_name = name or fn.__name__
        model = create_model(f"{action_name}_args", __config__=ConfigDict(extra="forbid"), **fields)
        doc = description if description is not None else inspect.getdoc(fn) or ""
        return cls(
            name=action_name,
            handler=fn,
            model=cast(type[BaseModel], model),
            description=doc.split("\n\n")[0].replace("\n", " "),
            critical=critical,
            pure=pure,
            rounding=dict(rounding or {}),
        )

    def validate(self, args: Any) -> dict[str, Any]:
        """Validate and coerce ``args``; raises :class:`InvalidArguments` with the field errors."""
        if not isinstance(args, Mapping):
            raise InvalidArguments([FieldError("(arguments)", f"expected an object, got {type(args).__name__}")])
        try:
            return self.model.model_validate(dict(args)).model_dump(mode="json")
        except ValidationError as exc:
            errors = [
                FieldError(".".join(str(p) for p in err["loc"]) or "(arguments)", err["msg"]) for err in exc.errors()
            ]
            raise InvalidArguments(errors) from None

    def normalize(self, args: dict[str, Any]) -> dict[str, Any]:
        """Canonical form of validated args: trimmed strings, declared rounding."""
        out = _strip(args)
        for key, digits in self.rounding.items():
            value = out.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = round(float(value), digits)
        return cast(dict[str, Any], out)

    def tool(self) -> dict[str, Any]:
        """The action as an OpenAI chat-completions tool definition."""
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    async def run(self, args: Mapping[str, Any]) -> Any:
        """Execute the handler with ``args`` (sync or async)."""
        result = self.handler(**args)
        if inspect.isawaitable(result):
            result = await result
        return result
