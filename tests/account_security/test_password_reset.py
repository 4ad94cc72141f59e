"""Password reset through Django's own views, end to end with the locmem email backend."""
import re

import pytest
from django.core import mail
from django.test import Client

from tests.account_security.conftest import PASSWORD

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a brand new long passphrase"


def test_a_reset_link_by_email_sets_a_new_password(dana):
    client = Client()
    assert client.post("/password-reset/", {"email": "dana@example.org"})["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["dana@example.org"]
    link = re.search(r"http://testserver(/reset/\S+/)", mail.outbox[0].body).group(1)

    form = client.get(link, follow=True)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    done = client.post(form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    assert done["Location"] == "/reset/done/"
    assert Client().post("/login/", {"username": "dana", "password": NEW_PASSWORD}).status_code == 302
    assert Client().post("/login/", {"username": "dana", "password": PASSWORD}).status_code == 200


def test_an_unknown_address_gets_the_same_page_and_no_email(dana):
    response = Client().post("/password-reset/", {"email": "nobody@example.org"})

    assert response["Location"] == "/password-reset/sent/"
    assert mail.outbox == []


def test_a_reset_link_works_once(dana):
    client = Client()
    client.post("/password-reset/", {"email": "dana@example.org"})
    link = re.search(r"http://testserver(/reset/\S+/)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    client.post(form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    again = Client().get(link, follow=True)

    assert "This link is not valid" in again.content.decode()
