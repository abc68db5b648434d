"""A pydantic model's JSON schema in the form each provider's structured output takes.

- OpenAI's strict mode: every object closed (`additionalProperties: false`), every property
  required, no defaults, single-entry `allOf` and sibling-laden `$ref` flattened, as openai-python's
  `to_strict_json_schema` does. A model that cannot be closed (`extra="allow"`, a `dict[str, X]`
  field) is refused, naming the field: strict mode would reject it at the server, after a billed call.
- Gemini's `responseSchema`: the OpenAPI subset google-genai sends (`$defs` inlined, `null` as
  `nullable`, upper-case types, `property_ordering`, snake_case keys, unknown keys dropped).
Anthropic's tool `input_schema` and Ollama's `format` take the model's JSON schema as it is.
"""

from __future__ import annotations

import copy
import re

from pydantic import BaseModel


class UnsupportedSchema(ValueError):
    """The output model cannot be expressed in the provider's schema form; names the field."""


def strict_schema(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema()
    return _strict(schema, schema, model.__name__)


def _strict(node: dict, root: dict, path: str) -> dict:
    for name, sub in (node.get("$defs") or {}).items():
        _strict(sub, root, name)
    if node.get("type") == "object":
        extra = node.get("additionalProperties", False)
        if extra is not False:
            raise UnsupportedSchema(
                f"{path} accepts properties it does not name (extra fields or a dict), which OpenAI's strict "
                "structured output refuses; give it fixed fields and extra=\"forbid\""
            )
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["required"] = list(properties)
        for key, sub in properties.items():
            _strict(sub, root, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        _strict(node["items"], root, f"{path}[]")
    for sub in node.get("anyOf") or []:
        _strict(sub, root, path)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        node.update(_strict(node.pop("allOf")[0], root, path))
    elif isinstance(all_of, list):
        for sub in all_of:
            _strict(sub, root, path)
    node.pop("default", None)
    ref = node.get("$ref")
    if ref and len(node) > 1:  # strict mode takes a $ref only alone: inline it beside its siblings
        target = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        node.update({**copy.deepcopy(target), **node})
        node.pop("$ref")
        return _strict(node, root, path)
    return node


_GEMINI_KEYS = frozenset({
    "additional_properties", "any_of", "default", "description", "enum", "example", "format", "items",
    "max_items", "max_length", "max_properties", "maximum", "min_items", "min_length", "min_properties",
    "minimum", "nullable", "pattern", "properties", "property_ordering", "required", "title", "type",
})


def gemini_schema(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return _gemini(schema, defs, model.__name__)


def _gemini(node: dict, defs: dict, path: str) -> dict:
    node = copy.deepcopy(node)
    if node.get("type") == "null":
        node["nullable"] = True
        del node["type"]
    elif "anyOf" in node and {"type": "null"} in node["anyOf"]:
        node["nullable"] = True
        node["anyOf"].remove({"type": "null"})
        if len(node["anyOf"]) == 1:
            node.update(node.pop("anyOf")[0])
    if "$ref" in node:
        node.update(defs[node.pop("$ref").split("defs/")[-1]])
        return _gemini(node, defs, path)
    if "anyOf" in node:
        node["anyOf"] = [_gemini(sub, defs, path) for sub in node["anyOf"]]
    kind = node.get("type")
    if isinstance(kind, str):
        node["type"] = kind = kind.upper()
    if "const" in node:
        if kind != "STRING":
            raise UnsupportedSchema(f"{path} is a Literal of a non-string value, which Gemini's schema cannot hold")
        node["enum"] = [node.pop("const")]
    if kind == "OBJECT":
        if node.get("additionalProperties"):
            raise UnsupportedSchema(
                f"{path} accepts properties it does not name (extra fields or a dict), which Gemini's schema "
                "cannot hold"
            )
        properties = node.get("properties") or {}
        node["properties"] = {key: _gemini(sub, defs, f"{path}.{key}") for key, sub in properties.items()}
        if not properties:
            del node["properties"]
        if len(properties) > 1:
            node["property_ordering"] = list(properties)
    elif kind == "ARRAY" and isinstance(node.get("items"), dict):
        node["items"] = _gemini(node["items"], defs, f"{path}[]")
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in node.items()}
    return {key: value for key, value in snake.items() if key in _GEMINI_KEYS and value is not None}
