"""Every API endpoint parses JSON within limits: too deep is a 400 that says so, too big a JSON 413."""
import json

import pytest

from mosaic.parsers import JSONRefused, loads_limited, nesting_depth

DEEP = b"[" * 10_000 + b"]" * 10_000


def test_nesting_depth_counts_arrays_and_objects_but_not_brackets_inside_strings():
    assert nesting_depth(b'{"a": [1, {"b": "[[[{{{\\"]]"}]}') == 3
    assert nesting_depth(b'"plain"') == 0


def test_loads_limited_refuses_deep_nesting_and_huge_integers_with_a_reason():
    with pytest.raises(JSONRefused, match="nested 10000 levels deep; the limit is 64"):
        loads_limited(DEEP)
    with pytest.raises(JSONRefused, match="4300"):
        loads_limited(b'{"r": ' + b"9" * 5000 + b"}")
    assert loads_limited(b'{"a": [[1]]}') == {"a": [[1]]}


@pytest.mark.django_db
def test_deeply_nested_json_to_the_unauthenticated_token_endpoint_is_a_400(client):
    response = client.post("/api/auth/token", DEEP, content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parse_error" and "nested" in error["message"]


@pytest.mark.django_db
def test_an_integer_too_long_to_convert_is_a_400(client):
    body = b'{"username": ' + b"1" * 5000 + b', "password": "x"}'
    response = client.post("/api/auth/token", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_a_json_413(client, settings):
    body = json.dumps({"username": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1), "password": "x"})
    response = client.post("/api/auth/token", body, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "request_too_large"
