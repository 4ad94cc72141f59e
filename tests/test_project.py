import pytest


@pytest.mark.django_db
def test_openapi_schema_is_served(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi: 3" in response.content


def test_the_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    schema_file = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema_file))
    assert b"/v1/chat/completions" in schema_file.read_bytes()
