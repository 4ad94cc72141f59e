"""Each request gets an id: in its log line (bound for every line logged while it runs), in x-request-id and,
for a completion, in its usage row (and its worker task: tests/operations/test_make_up.py)."""
import json
import logging

import pytest

from marketplace.models import Usage
from mosaic.logs import RequestIdFilter

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_lines(caplog):
    caplog.handler.addFilter(RequestIdFilter())  # as settings.LOGGING's handler does
    caplog.set_level(logging.INFO, logger="mosaic")
    return caplog


def test_a_completions_request_id_is_in_its_log_line_its_header_and_its_usage_row(client, served, request_lines):
    response = client.post("/v1/completions", json.dumps({"model": "duo", "prompt": "hi", "max_tokens": 3, "seed": 1}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {served.key}")
    assert response.status_code == 200
    request_id = response["x-request-id"]
    assert response.json()["id"] == f"cmpl-{request_id}"
    lines = [r for r in request_lines.records if r.name == "mosaic.request"]
    assert [(r.request_id, r.path, r.status) for r in lines] == [(request_id, "/v1/completions", 200)]
    assert Usage.objects.get().request_id == request_id


def test_every_line_logged_during_a_request_carries_its_id(client, request_lines):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    ids = {r.request_id for r in request_lines.records if r.name.startswith(("mosaic", "django"))}
    assert ids == {response["x-request-id"]}


def test_requests_get_distinct_ids(client):
    assert client.get("/healthz")["x-request-id"] != client.get("/healthz")["x-request-id"]


def test_json_lines_carry_the_request_id(client, served):
    """The production formatter (settings.LOGGING with LOG_FORMAT=json) on a real record of a real request."""
    import io
    from logging.config import dictConfig

    from mosaic.logs import logging_config

    dictConfig(logging_config(level="WARNING", json_lines=True, mosaic_level="INFO"))
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)
    try:
        response = client.get("/healthz")
    finally:
        from django.conf import settings

        dictConfig(settings.LOGGING)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == response["x-request-id"]
    assert line["logger"] == "mosaic.request" and line["status"] == 200 and line["path"] == "/healthz"
    assert line["level"] == "INFO" and "time" in line


def test_lines_logged_while_a_stream_is_produced_carry_its_id(client, served, request_lines, monkeypatch):
    """The usage of a stream is recorded after the view returned, while the body is sent: a line logged there
    (here by a wrapper around the real recording) still carries the request's id."""
    from marketplace.services import completions

    settle = completions.completion_settle

    def settle_and_log(**context):
        logging.getLogger("mosaic.test").info("recording usage")
        return settle(**context)

    monkeypatch.setattr(completions, "completion_settle", settle_and_log)
    response = client.post("/v1/completions", json.dumps({"model": "duo", "prompt": "hi", "max_tokens": 3,
                                                          "stream": True}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {served.key}")
    b"".join(response.streaming_content)
    [line] = [r for r in request_lines.records if r.name == "mosaic.test"]
    assert line.request_id == response["x-request-id"] == Usage.objects.get().request_id
