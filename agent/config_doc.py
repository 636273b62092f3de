"""Render the config tree as a markdown reference (`edge-agent config-reference`), so
docs/configuration.md is generated from the code and stays true."""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.config import Config


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        return " or ".join(_type_name(a) for a in args) + (" (optional)" if optional else "")
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in get_args(annotation))
    if origin is None:
        return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
    inner = ", ".join(_type_name(a) for a in get_args(annotation))
    name = getattr(origin, "__name__", str(origin)).replace("typing.", "")
    return f"{name}[{inner}]"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        if getattr(field.default_factory, "__name__", "").startswith("_default"):
            return "(computed)"
        return json.dumps(value, default=str)
    if field.default is PydanticUndefined:
        return "(required)"
    return json.dumps(field.default, default=str)


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append((key, "section", "", field.description or ""))
            rows.extend(_rows(annotation, f"{key}."))
            continue
        value = get_args(annotation)[-1] if get_origin(annotation) is dict else None
        if isinstance(value, type) and issubclass(value, BaseModel):  # by name: `tasks.<name>.*`
            rows.append((key, "map: name → section", _default(field), field.description or ""))
            rows.extend(_rows(value, f"{key}.<name>."))
            continue
        rows.append((key, _type_name(annotation), _default(field), field.description or ""))
    return rows


def reference_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the code by `edge-agent config-reference`. One YAML file "
        "(`deploy/agent.yaml` is the default); unknown keys are errors. Every key can be set "
        "from the environment: `EDGE_AGENT_` + the key path in capitals joined by `__`, e.g. "
        "`mqtt.port` → `EDGE_AGENT_MQTT__PORT`, `tasks.digits.threshold` → "
        "`EDGE_AGENT_TASKS__DIGITS__THRESHOLD`. Relative paths are relative to the config "
        "file. Secrets are never keys: see `*_file` and `$CREDENTIALS_DIRECTORY`.",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, type_, default, description in _rows(Config, ""):
        cells = [f"`{key}`", type_.replace("|", "\\|"), default.replace("|", "\\|"),
                 description.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
