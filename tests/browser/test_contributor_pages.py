"""A contributor signs up, uploads a real peft adapter through the web form, and sees it validated."""
import pytest

from marketplace.models import ExpertVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_up(page, live_server, username):
    page.goto(f"{live_server.url}/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=display_name]", username.title())
    page.fill("input[name=password]", "correct horse battery staple")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/dashboard/")


def test_a_contributor_uploads_an_expert_and_sees_it_valid(page, live_server, base_model, adapter_dirs):
    sign_up(page, live_server, "dora")

    page.goto(f"{live_server.url}/experts/new/")
    page.fill("input[name=name]", "Reverser")
    page.fill("input[name=slug]", "reverser")
    page.select_option("select[name=base_model]", base_model.name)
    page.set_input_files("input[name=adapter_config]", str(adapter_dirs["qv"] / "adapter_config.json"))
    page.set_input_files("input[name=adapter_model]", str(adapter_dirs["qv"] / "adapter_model.safetensors"))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_load_state()

    page.goto(f"{live_server.url}/dashboard/")
    row = page.locator("tr", has_text="Reverser")
    assert row.locator(".status-valid").inner_text() == "valid"
    assert ExpertVersion.objects.get(expert__slug="reverser").status == "valid"


def test_a_refused_upload_shows_the_reason_and_stores_nothing(page, live_server, base_model, tmp_path):
    sign_up(page, live_server, "edgar")
    pickle_file = tmp_path / "adapter_model.bin"
    pickle_file.write_bytes(b"\x80\x04K\x01.")

    page.goto(f"{live_server.url}/experts/new/")
    page.fill("input[name=name]", "Sneaky")
    page.fill("input[name=slug]", "sneaky")
    page.select_option("select[name=base_model]", base_model.name)
    page.set_input_files("input[name=adapter_archive]", str(pickle_file))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_load_state()

    assert "pickle" in page.locator(".errorlist").first.inner_text().lower()
    assert not ExpertVersion.objects.filter(expert__slug="sneaky").exists()
