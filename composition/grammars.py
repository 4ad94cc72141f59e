"""JSON grammars for constrained decoding, compiled by llguidance once per schema and cached. No torch here:
the web process checks a client's schema with `check_json_schema` before queueing the request."""
from __future__ import annotations

import functools
import json

from composition.errors import CompositionError

ANY_JSON_OBJECT = {"type": "object"}
# Compact separators with one space, as people write JSON ({"name": "Maria", "age": 34}); no other whitespace,
# so a model cannot wander off into endless blank space inside the document.
JSON_LAYOUT = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


@functools.lru_cache(maxsize=256)
def _grammar(schema_json: str) -> str:
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_json, overrides=JSON_LAYOUT)
    except ValueError as error:
        raise CompositionError(f"the JSON schema cannot be used for constrained decoding: {error}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise CompositionError(f"the JSON schema cannot be used for constrained decoding: {messages[0]}")
    return grammar


def json_grammar(schema: dict | None) -> str:
    """The grammar of the JSON documents matching `schema` (None: any JSON object)."""
    return _grammar(json.dumps(ANY_JSON_OBJECT if schema is None else schema, sort_keys=True))


def check_json_schema(schema: dict | None) -> None:
    """Raise CompositionError when the schema cannot be turned into a grammar."""
    json_grammar(schema)
