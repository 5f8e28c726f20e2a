"""Argument validation: the first thing every call goes through, whoever executes it.

A call whose arguments are not a JSON object, or break the tool's `inputSchema` (jsonschema,
Draft 2020-12), gets an `invalid_arguments` observation naming the path, like a real API's 400,
and reaches no executor.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import referencing.exceptions

from synth.ids import canonical_json
from synth.models import ToolSpec
from synth.rollout.observation import ToolObservation, error_observation


def _json_kind(value: Any) -> str:
    """The JSON name of a Python value's type, as an API error message would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


@functools.lru_cache(maxsize=1024)
def _validator_for(schema_json: str) -> jsonschema.Draft202012Validator | None:
    """A compiled validator per distinct input schema (checking a schema against the metaschema
    costs more than validating a call); None for a schema that is not valid JSON Schema."""
    schema = json.loads(schema_json)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError:
        return None
    return jsonschema.Draft202012Validator(schema)


def validate_arguments(spec: ToolSpec, arguments: Any) -> ToolObservation | None:
    """An `invalid_arguments` observation when `arguments` break the tool's input schema, else None.
    A tool whose own schema is not valid JSON Schema is not held against the agent."""
    if not isinstance(arguments, dict):
        return error_observation(
            "invalid_arguments", f"{spec.name}: arguments must be a JSON object, got {_json_kind(arguments)}",
            "validator", path="(root)")
    try:
        validator = _validator_for(canonical_json(spec.input_schema))
        if validator is None:
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except (jsonschema.exceptions.SchemaError, referencing.exceptions.Unresolvable, TypeError, ValueError):
        return None
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return error_observation("invalid_arguments", f"{spec.name}: {path}: {error.message[:300]}", "validator",
                             path=path)
