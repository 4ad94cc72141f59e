"""A strict Content-Security-Policy on every page: our own origin only, no inline code."""
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()}


@pytest.mark.parametrize("path", ["/", "/login/", "/signup/", "/password-reset/", "/api/base-models", "/nowhere/"])
def test_every_response_carries_the_strict_policy(path):
    policy = directives(Client().get(path))

    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in " ".join(policy.values())


def test_signed_in_pages_carry_it_too(dana):
    client = Client()
    client.force_login(dana.user)

    for path in ("/dashboard/", "/account/", "/account/two-factor/setup/"):
        assert directives(client.get(path))["script-src"] == "'self'", path


def test_no_template_has_inline_scripts_styles_or_event_handlers():
    offenders = []
    for template in Path(settings.BASE_DIR, "templates").rglob("*.html"):
        text = template.read_text()
        if template.name == "statement.html":  # a standalone document, served with its own policy
            continue
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", text):
            offenders.append(template.name)
    assert offenders == []


def test_the_site_stylesheet_is_a_static_file_of_our_own_origin():
    page = Client().get("/").content.decode()

    assert '<link rel="stylesheet" href="/static/mosaic/site.css">' in page
