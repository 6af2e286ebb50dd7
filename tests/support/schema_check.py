"""A JSON Schema (draft 2020-12) checker limited to the keywords docs/telemetry.schema.json and the
schemas of plugins/warble/openapi.yaml use (OpenAPI 3.1's schemas are JSON Schema).

`jsonschema` is not installed in the project's environment and is not a
dependency, hence this small checker.  A schema using any other keyword is
refused (SchemaUnsupported), so that the checker can never silently skip a rule.
"""

from __future__ import annotations

import re
from typing import Any

ANNOTATIONS = {"$schema", "$id", "title", "description"}
KEYWORDS = ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                          "minimum", "maximum", "exclusiveMinimum", "pattern", "$ref", "$defs", "enum"}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


class SchemaUnsupported(Exception):
    pass


def check_schema(schema: Any, path: str = "#") -> None:
    """Refuse a schema that uses keywords this checker does not implement."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaUnsupported(f"{path}: a schema must be an object or a boolean")
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise SchemaUnsupported(f"{path}: unsupported keywords {sorted(unknown)}")
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            check_schema(sub, f"{path}/{key}/{name}")
    for key in ("items", "additionalProperties"):
        if key in schema:
            check_schema(schema[key], f"{path}/{key}")
    if "$ref" in schema and not schema["$ref"].startswith("#/"):
        raise SchemaUnsupported(f"{path}: only local references (#/...) are supported")


def validate(instance: Any, schema: Any, root: Any | None = None, path: str = "$") -> list[str]:
    """Every violation, as 'path: reason'; an empty list means valid."""
    root = schema if root is None else root
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: not allowed"]
    errors: list[str] = []
    if "$ref" in schema:
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        errors += validate(instance, target, root, path)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and not any(TYPES[k](instance) for k in kinds):
        return errors + [f"{path}: expected {' or '.join(kinds)}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} > maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {instance} <= exclusiveMinimum {schema['exclusiveMinimum']}")
    if isinstance(instance, str) and "pattern" in schema and not re.search(schema["pattern"], instance):
        errors.append(f"{path}: {instance!r} does not match {schema['pattern']}")
    if isinstance(instance, list):
        if "minItems" in schema and len(instance) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        for name in schema.get("required", []):
            if name not in instance:
                errors.append(f"{path}: missing required {name!r}")
        properties = schema.get("properties", {})
        for name, value in instance.items():
            if name in properties:
                errors += validate(value, properties[name], root, f"{path}.{name}")
            elif "additionalProperties" in schema:
                errors += validate(value, schema["additionalProperties"], root, f"{path}.{name}")
    return errors
