"""/metrics in Prometheus text format after real calls: a completion on the tiny real model (Celery eager),
a Stripe webhook, the ledger."""
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def complete(client, served, **extra):
    body = {"model": "duo", "prompt": "hello", "max_tokens": 4, "seed": 1, "temperature": 0, **extra}
    return client.post("/v1/completions", json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {served.key}")


def test_a_completion_shows_its_tokens_and_time_to_first_token(client, served):
    before = scrape(client)
    response = complete(client, served)
    assert response.status_code == 200
    usage = response.json()["usage"]
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("mosaic_completions_total", system="duo") == 1
    assert grew("mosaic_prompt_tokens_total", system="duo") == usage["prompt_tokens"] > 0
    assert grew("mosaic_completion_tokens_total", system="duo") == usage["completion_tokens"] > 0
    assert grew("mosaic_time_to_first_token_seconds_count", system="duo") == 1
    assert grew("mosaic_time_to_first_token_seconds_sum", system="duo") > 0
    assert grew("mosaic_inter_token_latency_seconds_count", system="duo") == 1
    assert grew("mosaic_http_requests_total", route="v1/completions", method="POST", status="200") == 1
    assert grew("mosaic_http_request_duration_seconds_count", route="v1/completions", method="POST") == 1


def test_a_streamed_completion_is_counted_too(client, served):
    before = scrape(client)
    response = complete(client, served, stream=True)
    assert response.status_code == 200
    b"".join(response.streaming_content)
    after = scrape(client)
    assert value(after, "mosaic_time_to_first_token_seconds_count", system="duo") - \
        value(before, "mosaic_time_to_first_token_seconds_count", system="duo") == 1


def test_the_adapter_pool_of_the_in_process_engine_is_counted(client, served):
    """The engine is the process's (other tests may have used it): a second call finds both experts resident."""
    complete(client, served)
    warm = scrape(client)
    complete(client, served, seed=2)
    after = scrape(client)
    assert value(warm, "mosaic_adapter_pool_loads_total", base_model="base") >= 2
    assert value(after, "mosaic_adapter_pool_hits_total", base_model="base") > \
        value(warm, "mosaic_adapter_pool_hits_total", base_model="base")
    assert value(after, "mosaic_adapter_pool_misses_total", base_model="base") == \
        value(warm, "mosaic_adapter_pool_misses_total", base_model="base")
    assert value(after, "mosaic_adapter_pool_resident_adapters", base_model="base") >= 2
    from pathlib import Path

    from gpu_workers.observability import AdapterPoolCollector, loaded_engines

    # What the served engine's pool counted is what is exposed under its base model's name (another test's tiny
    # world in this process may have an engine under the same name: its samples are there too).
    [engine] = [e for path, e in loaded_engines().items() if path == str(Path(served.base.local_path).resolve())]
    exposed = [(sample.name, sample.value) for family in AdapterPoolCollector().collect() for sample in family.samples
               if sample.labels["base_model"] == "base"]
    for name in ("hits", "misses", "evictions", "loads"):
        assert (f"mosaic_adapter_pool_{name}_total", getattr(engine.pool.stats, name)) in exposed


def test_the_ledger_appends_and_what_no_checkpoint_covers_yet(client, served):
    from ledger.models import Entry
    from ledger.services import create_checkpoint

    samples = scrape(client)
    entries = Entry.objects.count()
    assert entries > 0
    assert value(samples, "mosaic_ledger_appends_total") == entries
    assert value(samples, "mosaic_ledger_entries_after_checkpoint") == entries
    assert value(samples, "mosaic_ledger_checkpoint_lag_seconds") > 0
    assert ("mosaic_ledger_checkpoint_age_seconds", ()) not in samples  # no checkpoint yet
    create_checkpoint()
    samples = scrape(client)
    assert value(samples, "mosaic_ledger_entries_after_checkpoint") == 0
    assert value(samples, "mosaic_ledger_checkpoint_lag_seconds") == 0
    assert 0 <= value(samples, "mosaic_ledger_checkpoint_age_seconds") < 60


def test_the_ledgers_integration_lag_is_the_age_of_the_oldest_event_not_integrated(client, settings):
    from ledger.services import record_event, sequence_pending

    settings.LEDGER_SEQUENCING = "background"  # only the sequencer integrates (as `ledger sequence` in production)
    assert value(scrape(client), "mosaic_ledger_integration_lag_seconds") == 0
    first = record_event(kind="usage.recorded", payload={"n": 1}, actor="org:1")
    record_event(kind="usage.recorded", payload={"n": 2}, actor="org:1")

    samples = scrape(client)
    from django.utils import timezone

    assert value(samples, "mosaic_ledger_events_waiting") == 2
    assert 0 < value(samples, "mosaic_ledger_integration_lag_seconds") <= \
        (timezone.now() - first.created_at).total_seconds()
    appended = value(samples, "mosaic_ledger_appends_total")
    sequence_pending(sign=False)
    samples = scrape(client)
    assert value(samples, "mosaic_ledger_events_waiting") == 0
    assert value(samples, "mosaic_ledger_integration_lag_seconds") == 0
    assert value(samples, "mosaic_ledger_appends_total") == appended + 2


def test_stripe_webhook_outcomes_are_counted(client):
    before = scrape(client)
    response = client.post("/api/stripe/webhook", b"{}", content_type="application/json",
                           HTTP_STRIPE_SIGNATURE="t=1,v1=forged")
    assert response.status_code == 400
    after = scrape(client)
    assert value(after, "mosaic_stripe_webhook_events_total", endpoint="billing", outcome="refused") - \
        value(before, "mosaic_stripe_webhook_events_total", endpoint="billing", outcome="refused") == 1


def test_a_metrics_token_keeps_others_out(client, settings):
    settings.METRICS_TOKEN = "scraper-secret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert scrape(client, HTTP_AUTHORIZATION="Bearer scraper-secret")
