"""An organization asks the real model a question through the official openai client, on a live server: the
request is rendered with SmolLM2's own chat template (the system message included) and ends on <|im_end|>."""
import openai
import pytest
from django.core.management import call_command
from transformers import AutoTokenizer

from marketplace.models import BaseModel, Expert, Plan, Subscription
from marketplace.services.accounts import contributor_register
from marketplace.services.organizations import api_key_create
from tests.marketplace.catalog.support import api_client, upload_expert

pytestmark = [pytest.mark.real_model, pytest.mark.django_db(transaction=True)]

MESSAGES = [
    {"role": "system", "content": "You are a geography teacher. Answer in one sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture
def system_on_the_real_model(real_model_settings, real_adapter, staff_api):
    """A staff user registers the real model; a contributor uploads an adapter; staff compose a system of it."""
    call_command("register_base_model", "--default")
    contributor = contributor_register(username="camille", password="correct horse battery staple",
                                       display_name="Camille", priorities=["geography"])
    uploaded = upload_expert(api_client(contributor), real_adapter, slug="geographer",
                             base_model="smollm2-135m-instruct")
    assert uploaded.status_code == 201, uploaded.content
    assert Expert.objects.get().current_version.status == "valid"  # validated once the upload committed
    composed = staff_api.post("/api/systems", {
        "slug": "smol", "name": "Smol", "base_model": "smollm2-135m-instruct", "strategy": "single",
        "strategy_config": {}, "experts": [Expert.objects.get().pk],
    }, format="json")
    assert composed.status_code == 201, composed.content
    return composed.json()


@pytest.fixture
def staff_api(django_user_model):
    return api_client(django_user_model.objects.create_user(username="operator", is_staff=True))


@pytest.fixture
def organization_key(alice_co):
    plan = Plan.objects.create(slug="team", name="Team", monthly_fee_minor=2000, price_per_1k_tokens_minor=50,
                               requests_per_minute=100, tokens_per_minute=100_000, monthly_token_quota=1_000_000)
    Subscription.objects.create(organization=alice_co, plan=plan, status=Subscription.Status.ACTIVE)
    return api_key_create(organization=alice_co, name="tests")[1]


def test_the_capital_of_france_is_paris(system_on_the_real_model, organization_key, live_server):
    with openai.OpenAI(base_url=live_server.url + "/v1", api_key=organization_key, max_retries=0) as client:
        completion = client.chat.completions.create(model="smol", messages=MESSAGES, max_tokens=32, temperature=0)

    answer = completion.choices[0]
    assert "Paris" in answer.message.content
    assert answer.finish_reason == "stop"  # it ended its turn with <|im_end|>, which is not in the text
    assert "<|im_end|>" not in answer.message.content
    tokenizer = AutoTokenizer.from_pretrained(BaseModel.objects.get().local_path)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    assert completion.usage.prompt_tokens == len(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
