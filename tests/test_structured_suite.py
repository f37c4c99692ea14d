"""The schema sweep: 35 JSON Schemas x (greedy + 5 seeds) on two random models; every completed output validates."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from fixtures_decoding import decoding_model_dirs  # noqa: F401
from fixtures_structured import sentencepiece_llama_dir  # noqa: F401

from taskhub import pipeline

S = {"type": "string", "maxLength": 6}
I = {"type": "integer", "minimum": -50, "maximum": 50}  # noqa: E741


def obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    """A closed object schema (additionalProperties false unless `extra` says otherwise)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


SCHEMAS = {
    "flat": obj({"name": S, "age": I}),
    "nested": obj({"user": obj({"id": I, "name": S}), "active": {"type": "boolean"}}),
    "deep": obj({"a": obj({"b": obj({"c": obj({"d": I})})})}),
    "int_array_bounds": {"type": "array", "items": I, "minItems": 2, "maxItems": 4},
    "array_of_objects": {"type": "array", "items": obj({"k": S, "v": I}), "minItems": 1, "maxItems": 2},
    "nested_arrays": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
        "maxItems": 3,
    },
    "string_enum": {"enum": ["red", "green", "blue"]},
    "enum_in_object": obj({"color": {"enum": ["red", "green"]}, "size": {"enum": ["S", "M", "L"]}}),
    "mixed_enum": {"enum": ["x", 1, True, None]},
    "const": obj({"version": {"const": 2}, "kind": {"const": "point"}}),
    "integer_bounds": obj({"n": {"type": "integer", "minimum": 10, "maximum": 20}}),
    "integer_exclusive": obj({"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5}}),
    "number_bounds": obj({"x": {"type": "number", "minimum": -1.5, "maximum": 2.5}}),
    "number_exclusive": obj({"p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}}),
    "string_lengths": obj({"code": {"type": "string", "minLength": 2, "maxLength": 4}}),
    "pattern": obj({"id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}}),
    "pattern_lowercase": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.(com|org)$", "maxLength": 20},
    "format_date": obj({"day": {"type": "string", "format": "date"}}),
    "format_time": obj({"at": {"type": "string", "format": "time"}}),
    "format_date_time": obj({"ts": {"type": "string", "format": "date-time"}}),
    "format_uuid": obj({"id": {"type": "string", "format": "uuid"}}),
    "format_ipv4": obj({"ip": {"type": "string", "format": "ipv4"}}),
    "format_email": obj({"mail": {"type": "string", "format": "email", "maxLength": 16}}),
    "optional_fields": obj({"a": I, "b": S, "c": {"type": "boolean"}}, required=["a"]),
    "all_optional": obj({"x": I, "y": I}, required=[]),
    "anyof_scalar": obj({"v": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, S]}}),
    "anyof_objects": {"anyOf": [obj({"cat": S}), obj({"dog": I})]},
    "nullable": obj({"note": {"type": ["string", "null"], "maxLength": 5}}),
    "booleans_nulls": obj({"t": {"type": "boolean"}, "n": {"type": "null"}}),
    "refs": {
        "$defs": {"point": obj({"x": I, "y": I})},
        **obj({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}}),
    },
    "tuple_prefix_items": {
        "type": "array",
        "prefixItems": [I, S, {"type": "boolean"}],
        "items": False,
        "minItems": 3,
    },
    "enum_array": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 2, "maxItems": 3},
    "open_object": {"type": "object", "properties": {"id": I}, "required": ["id"], "maxProperties": 1},
    "json_object_any": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "integer"}},
    "top_level_integer": {"type": "integer", "minimum": 100, "maximum": 999},
    "record": obj(
        {
            "title": S,
            "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
            "rating": {"type": "number", "minimum": 0, "maximum": 5},
            "genres": {"type": "array", "items": {"enum": ["drama", "comedy"]}, "minItems": 1, "maxItems": 2},
            "sequel": {"type": ["boolean", "null"]},
        },
        required=["title", "year", "genres"],
    ),
}
SEEDS = range(5)


def validator(schema: dict) -> jsonschema.protocols.Validator:
    """jsonschema's validator with its format checks, except that RFC 3339's leap second (:60), which the
    grammar allows and Python's datetime parser (behind jsonschema's time checks) rejects, counts as valid."""
    cls = jsonschema.validators.validator_for(schema)
    base = cls.FORMAT_CHECKER
    checker = jsonschema.FormatChecker()
    checker.checkers = dict(base.checkers)
    for name in ("time", "date-time"):
        checker.checks(name)(lambda value, name=name: base.conforms(LEAP_SECOND.sub(r"\1:59", value), name))
    return cls(schema, format_checker=checker)


LEAP_SECOND = re.compile(r"(\d\d:\d\d):60")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gpt2", "sentencepiece"])  # byte-level BPE; ▁ + <0xNN> byte fallback
def test_every_completed_output_validates(decoding_model_dirs, sentencepiece_llama_dir, model):
    path = sentencepiece_llama_dir if model == "sentencepiece" else decoding_model_dirs[model]
    pipe = pipeline("text-generation", str(path), max_new_tokens=64, return_full_text=False)
    prompts = ["Give me JSON:", "The quick brown fox"]
    completed = total = 0
    for name, schema in SCHEMAS.items():
        fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
        runs = [pipe(prompts, response_format=fmt)]
        runs += [pipe(prompts, response_format=fmt, do_sample=True, seed=seed) for seed in SEEDS]
        check = validator(schema)
        for run in runs:
            for [result] in run:
                total += 1
                if result["finish_reason"] == "length":
                    assert result["parsed"] is None and "max_new_tokens" in result["error"]
                    continue
                completed += 1
                assert result["error"] is None, (name, result)
                assert result["parsed"] == json.loads(result["generated_text"])
                errors = [e.message for e in check.iter_errors(result["parsed"])]
                assert not errors, (name, result["generated_text"], errors)
    assert len(SCHEMAS) >= 30 and total == len(SCHEMAS) * 12
    print(f"{model}: {completed}/{total} outputs completed within 64 tokens, all valid")
    assert completed >= 0.8 * total, f"only {completed}/{total} completed within 64 tokens"
