"""JSON with limits: the request parser of every API endpoint, and the reader of uploaded JSON files.

Python's json module recurses once per nesting level, so ten kilobytes of `[[[[...` raise RecursionError.
`loads_limited` measures the nesting depth first (in C-speed passes over the bytes) and refuses documents
deeper than `max_depth`, bigger than `max_bytes`, or holding an integer too long to convert."""
from __future__ import annotations

import json
import re
from itertools import accumulate

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 64

_STRING_LITERAL = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS_ONLY = bytes(range(256)).translate(None, b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JSONRefused(ValueError):
    """The bytes are not a JSON document within the limits; the message says why."""


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count)."""
    brackets = _STRING_LITERAL.sub(b"", raw).translate(None, _BRACKETS_ONLY)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def loads_limited(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = None):
    """json.loads, refusing (JSONRefused) what is not UTF-8 JSON, nested deeper than max_depth, larger than
    max_bytes, or holds a number Python will not convert."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if max_bytes is not None and len(raw) > max_bytes:
        raise JSONRefused(f"it is {len(raw)} bytes; the limit is {max_bytes}")
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JSONRefused(f"it is nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise JSONRefused("it is not UTF-8 text") from None
    except RecursionError:
        raise JSONRefused(f"it is nested too deeply; the limit is {max_depth}") from None
    except ValueError as error:  # JSONDecodeError, and integers longer than sys.get_int_max_str_digits()
        raise JSONRefused(str(error)) from None


class LimitedJSONParser(JSONParser):
    """DRF's JSON parser with the body limited to DATA_UPLOAD_MAX_MEMORY_SIZE (413) and the nesting to
    MAX_JSON_DEPTH (400)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            return loads_limited(raw)
        except JSONRefused as error:
            raise ParseError(f"The request body is not valid JSON: {error}.") from None
