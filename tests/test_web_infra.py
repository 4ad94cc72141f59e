"""What every page and API answer relies on: static files in every mode, offline API docs, JSON errors under /api/
and /v1/."""
import re

import pytest
from django.test import Client, RequestFactory

pytestmark = pytest.mark.django_db


def test_the_admins_static_files_are_served_with_debug_off(settings):
    settings.DEBUG = False
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_api_docs_load_only_our_own_files(page):
    html = Client().get(page).content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(asset.startswith("/static/drf_spectacular_sidecar/") for asset in assets), assets
    assert all(asset.startswith("/") and not asset.startswith("//") for asset in assets), assets
    assert not re.search(r"https?://", html.replace("http://www.w3.org", ""))
    for asset in assets:
        assert Client().get(asset.replace("&amp;", "&")).status_code == 200, asset


def test_plotly_is_served_from_our_static_files():
    response = Client().get("/static/vendor/plotly.min.js")
    assert response.status_code == 200 and b"plotly" in b"".join(response.streaming_content)[:2000].lower()


@pytest.mark.parametrize("path", ["/api/nope", "/v1/nope", "/api/organizations/1/nope"])
def test_unknown_api_paths_answer_json_in_the_error_shape(path):
    response = Client().get(path)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_wrong_method_under_api_answers_json():
    response = Client().delete("/api/plans")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_a_server_error_under_api_answers_json_and_html_elsewhere():
    from mosaic.errors import server_error

    api = server_error(RequestFactory().get("/api/plans"))
    page = server_error(RequestFactory().get("/organizations/"))
    assert api.status_code == 500 and b'"code": "server_error"' in api.content
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")
