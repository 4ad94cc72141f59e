"""Organizations: sign-up, roles, API keys (hashed, shown once, scoped, revocable) and who sees what."""
import pytest
from django.core.management import call_command

from marketplace.models import Membership, Organization, OrganizationAPIKey
from tests.marketplace.conftest import client_for
from tests.second_factor import sign_in_with_second_factor

pytestmark = pytest.mark.django_db


def test_sign_up_makes_the_caller_owner(alice):
    response = client_for(alice).post("/api/organizations", {"name": "Alice Co", "domains": ["legal"]}, format="json")
    assert response.status_code == 201, response.content
    organization = Organization.objects.get(pk=response.json()["id"])
    assert organization.slug == "alice-co" and organization.domains == ["legal"]
    assert Membership.objects.get(organization=organization, user=alice).role == "owner"


def test_sign_up_with_a_taken_name_is_a_conflict(alice, bob, alice_co):
    response = client_for(bob).post("/api/organizations", {"name": "alice-co"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["param"] == "name"


def test_anonymous_cannot_sign_up(client, db):
    response = client.post("/api/organizations", {"name": "x"}, content_type="application/json")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_an_api_key_is_shown_once_and_stored_hashed(alice, alice_co):
    response = client_for(alice).post(f"/api/organizations/{alice_co.pk}/keys", {"name": "ci"}, format="json")
    assert response.status_code == 201
    key = response.json()["key"]
    assert key.startswith("mos_")
    prefix = response.json()["prefix"]
    assert key.startswith(f"mos_{prefix}.")
    stored = OrganizationAPIKey.objects.get(prefix=prefix)
    assert key.split(".", 1)[1] not in stored.hashed_key and key not in stored.id
    listed = client_for(alice).get(f"/api/organizations/{alice_co.pk}/keys").json()
    assert [k["prefix"] for k in listed] == [prefix]
    assert "key" not in listed[0]


def test_key_scopes_must_be_read_or_use(alice, alice_co):
    response = client_for(alice).post(
        f"/api/organizations/{alice_co.pk}/keys", {"name": "ci", "scopes": ["admin"]}, format="json"
    )
    assert response.status_code == 400
    assert "read, use" in response.json()["error"]["message"]


@pytest.mark.parametrize("role", ["developer", "billing"])
def test_only_owners_create_keys(alice_co, charlie, role):
    Membership.objects.create(organization=alice_co, user=charlie, role=role)
    response = client_for(charlie).post(f"/api/organizations/{alice_co.pk}/keys", {"name": "mine"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_developers_see_keys_but_billing_members_do_not(alice_co, charlie, bob):
    Membership.objects.create(organization=alice_co, user=charlie, role="developer")
    Membership.objects.create(organization=alice_co, user=bob, role="billing")
    assert client_for(charlie).get(f"/api/organizations/{alice_co.pk}/keys").status_code == 200
    assert client_for(bob).get(f"/api/organizations/{alice_co.pk}/keys").status_code == 403


def test_bob_cannot_see_or_touch_alice_cos_keys(alice, bob, alice_co, bob_co):
    created = client_for(alice).post(f"/api/organizations/{alice_co.pk}/keys", {"name": "ci"}, format="json").json()
    bob_client = client_for(bob)
    assert bob_client.get(f"/api/organizations/{alice_co.pk}/keys").status_code == 404
    assert bob_client.post(f"/api/organizations/{alice_co.pk}/keys/{created['prefix']}/revoke").status_code == 404
    assert bob_client.post(f"/api/organizations/{bob_co.pk}/keys/{created['prefix']}/revoke").status_code == 404
    assert not OrganizationAPIKey.objects.get(prefix=created["prefix"]).revoked
    assert [o["slug"] for o in bob_client.get("/api/organizations").json()] == ["bob-co"]


def test_owner_adds_a_developer_and_cannot_remove_the_last_owner(alice, charlie, alice_co):
    client = client_for(alice)
    response = client.post(f"/api/organizations/{alice_co.pk}/members", {"username": "charlie", "role": "developer"},
                           format="json")
    assert response.status_code == 201
    assert client.delete(f"/api/organizations/{alice_co.pk}/members/{alice.pk}").status_code == 403
    assert client.delete(f"/api/organizations/{alice_co.pk}/members/{charlie.pk}").status_code == 204


def test_create_api_key_command_prints_a_working_key(alice_co, capsys):
    call_command("create_api_key", "--org", "alice-co", "--name", "script", "--scopes", "read")
    key = capsys.readouterr().out.strip()
    assert key.startswith("mos_")
    from marketplace.selectors.organizations import api_key_from_presented

    found = api_key_from_presented(presented=key)
    assert found.organization == alice_co and found.scopes == ["read"] and found.name == "script"


def test_create_api_key_command_names_an_unknown_organization(db):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="nobody-co"):
        call_command("create_api_key", "--org", "nobody-co")


def test_staff_create_a_key_in_the_admin_and_see_it_once(client, alice_co):
    from tests.marketplace.factories import UserFactory

    operator = UserFactory(username="operator")
    operator.is_staff = operator.is_superuser = True
    operator.save()
    sign_in_with_second_factor(client, operator)
    response = client.post("/admin/marketplace/organizationapikey/add/",
                           {"name": "from-admin", "organization": alice_co.pk, "scopes": '["read"]'}, follow=True)
    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "mos_" in str(m)]
    key = message.split("is: ")[1].split(" ")[0]
    from marketplace.selectors.organizations import api_key_from_presented

    found = api_key_from_presented(presented=key)
    assert found.organization == alice_co and found.scopes == ["read"] and found.name == "from-admin"
    assert OrganizationAPIKey.objects.count() == 1
