"""Prometheus metrics (prometheus-client), served at /metrics by the web and on MOSAIC_WORKER_METRICS_PORT by
each worker.

Counted as things happen: HTTP requests by route, method and status and their latency (mosaic.middleware);
per system, completions, tokens in and out, time to first token and inter-token latency
(observe_completion, called where a completion's usage is recorded); Stripe webhook outcomes (middleware);
on workers, completions and tokens per base model (a Celery signal). Read at scrape time: queue depth per
base model (the broker), the ledger's appends, integration lag and checkpoint age (the database), adapter
pool hits, misses and evictions (the engines this process loaded).

With several gunicorn worker processes, set PROMETHEUS_MULTIPROC_DIR (an empty directory, shared by them):
the endpoint then adds up every process's counters.
"""
from __future__ import annotations

import logging
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gpu_workers.observability import AdapterPoolCollector

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter("mosaic_http_requests", "HTTP requests by route, method and status.",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("mosaic_http_request_duration_seconds", "Time to the response's headers, by route.",
                         ["route", "method"], buckets=LATENCY_BUCKETS)
COMPLETIONS = Counter("mosaic_completions", "Completions served, by system.", ["system"])
PROMPT_TOKENS = Counter("mosaic_prompt_tokens", "Prompt tokens (tokens in), by system.", ["system"])
COMPLETION_TOKENS = Counter("mosaic_completion_tokens", "Generated tokens (tokens out), by system.", ["system"])
TIME_TO_FIRST_TOKEN = Histogram("mosaic_time_to_first_token_seconds",
                                "Engine time from the start of a request to its first generated token.",
                                ["system"], buckets=TOKEN_LATENCY_BUCKETS)
INTER_TOKEN_LATENCY = Histogram("mosaic_inter_token_latency_seconds",
                                "Mean time between generated tokens, one observation per request.",
                                ["system"], buckets=TOKEN_LATENCY_BUCKETS)
STRIPE_WEBHOOKS = Counter("mosaic_stripe_webhook_events", "Stripe webhook deliveries by endpoint and outcome.",
                          ["endpoint", "outcome"])
WORKER_COMPLETIONS = Counter("mosaic_worker_completions", "Completion tasks run on this worker, by outcome.",
                             ["base_model", "outcome"])
WORKER_TOKENS = Counter("mosaic_worker_generated_tokens", "Tokens generated on this worker.", ["base_model"])
WORKER_TIME_TO_FIRST_TOKEN = Histogram("mosaic_worker_time_to_first_token_seconds",
                                       "Time to first token on this worker.", ["base_model"],
                                       buckets=TOKEN_LATENCY_BUCKETS)

STRIPE_WEBHOOK_ROUTES = {"stripe-webhook": "billing", "stripe-connect-webhook": "connect"}
STRIPE_OUTCOMES = {"duplicate", "ignored", "stale", "not a Mosaic subscription"}

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # in multiprocess mode the collectors are added per scrape
    REGISTRY.register(AdapterPoolCollector())


def observe_request(*, route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method).observe(seconds)


def observe_stripe_webhook(*, url_name: str | None, status: int, result) -> None:
    endpoint = STRIPE_WEBHOOK_ROUTES.get(url_name or "")
    if endpoint is None:
        return
    if status >= 500:
        outcome = "error"
    elif status >= 400:
        outcome = "refused"
    else:
        outcome = result if result in STRIPE_OUTCOMES else "applied"
    STRIPE_WEBHOOKS.labels(endpoint, outcome).inc()


def observe_completion(*, system: str, result: dict) -> None:
    """One served completion: its tokens and (where the engine measured them) its token timings."""
    COMPLETIONS.labels(system).inc()
    usage = result.get("usage") or {}
    PROMPT_TOKENS.labels(system).inc(int(usage.get("prompt_tokens") or 0))
    COMPLETION_TOKENS.labels(system).inc(int(usage.get("completion_tokens") or 0))
    if isinstance(result.get("first_token_ms"), (int, float)):
        TIME_TO_FIRST_TOKEN.labels(system).observe(result["first_token_ms"] / 1000)
    if isinstance(result.get("inter_token_ms"), (int, float)):
        INTER_TOKEN_LATENCY.labels(system).observe(result["inter_token_ms"] / 1000)


def observe_worker_task(*, task=None, kwargs=None, retval=None, **_) -> None:
    """celery task_postrun on a worker: a completion task's outcome, tokens and time to first token."""
    if getattr(task, "name", None) != "gpu_workers.run_completion":
        return
    message = (kwargs or {}).get("message")
    base = message.get("base_model") if isinstance(message, dict) else None
    name = str(base.get("name")) if isinstance(base, dict) else "unknown"
    if not isinstance(retval, dict):
        WORKER_COMPLETIONS.labels(name, "failed").inc()
        return
    if "error" in retval:
        WORKER_COMPLETIONS.labels(name, str((retval["error"] or {}).get("code") or "error")).inc()
        return
    WORKER_COMPLETIONS.labels(name, "ok").inc()
    WORKER_TOKENS.labels(name).inc(int((retval.get("usage") or {}).get("completion_tokens") or 0))
    if isinstance(retval.get("first_token_ms"), (int, float)):
        WORKER_TIME_TO_FIRST_TOKEN.labels(name).observe(retval["first_token_ms"] / 1000)


def start_worker_metrics_server() -> int | None:
    """Serve this worker's metrics on MOSAIC_WORKER_METRICS_PORT (and MOSAIC_WORKER_METRICS_ADDR, default
    127.0.0.1), when set."""
    port = os.environ.get("MOSAIC_WORKER_METRICS_PORT")
    if not port:
        return None
    start_http_server(int(port), addr=os.environ.get("MOSAIC_WORKER_METRICS_ADDR", "127.0.0.1"))
    return int(port)


class DeploymentCollector:
    """Read at scrape time: queue depth per registered base model, and the ledger's state."""

    def collect(self):
        from mosaic import readiness

        depth = GaugeMetricFamily("mosaic_queue_depth", "Requests waiting in a base model's queue.",
                                  labels=["base_model"])
        broker_up = GaugeMetricFamily("mosaic_broker_up", "1 when the broker answered this scrape.")
        try:
            depths = readiness.queue_depths()
        except Exception as error:  # noqa: BLE001 - an unreachable broker is a metric, not a failed scrape
            logger.warning("queue depth not read: %s: %s", type(error).__name__, error)
            broker_up.add_metric([], 0)
        else:
            broker_up.add_metric([], 1)
            for name, count in depths.items():
                depth.add_metric([name], count)
        yield depth
        yield broker_up
        ledger = readiness.ledger_state()
        appends = CounterMetricFamily("mosaic_ledger_appends", "Entries appended to the ledger (its tree size).")
        appends.add_metric([], ledger["entries"])
        yield appends
        waiting = GaugeMetricFamily("mosaic_ledger_events_waiting",
                                    "Committed events the sequencer has not integrated into the ledger yet.")
        waiting.add_metric([], ledger["events_waiting"])
        yield waiting
        lag = GaugeMetricFamily("mosaic_ledger_integration_lag_seconds",
                                "Age of the oldest committed event not integrated yet (0: none waits).")
        lag.add_metric([], ledger["integration_lag_seconds"])
        yield lag
        unsigned = GaugeMetricFamily("mosaic_ledger_entries_after_checkpoint",
                                     "Entries appended after the latest signed checkpoint.")
        unsigned.add_metric([], ledger["entries_after_checkpoint"])
        yield unsigned
        unsigned_age = GaugeMetricFamily("mosaic_ledger_checkpoint_lag_seconds",
                                         "Age of the oldest entry no signed checkpoint covers yet (0: all covered).")
        unsigned_age.add_metric([], ledger["checkpoint_lag_seconds"])
        yield unsigned_age
        if ledger["checkpoint_age_seconds"] is not None:
            age = GaugeMetricFamily("mosaic_ledger_checkpoint_age_seconds", "Age of the latest signed checkpoint.")
            age.add_metric([], ledger["checkpoint_age_seconds"])
            yield age


def exposition() -> bytes:
    """The text of /metrics: this process's (or every process's) metrics and the deployment's."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(AdapterPoolCollector())
    else:
        registry = REGISTRY
    scrape = CollectorRegistry()
    scrape.register(DeploymentCollector())
    return generate_latest(registry) + generate_latest(scrape)


def metrics_view(request):
    """GET /metrics; with settings.METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    import hmac

    from django.conf import settings
    from django.http import HttpResponse, JsonResponse

    if settings.METRICS_TOKEN and not hmac.compare_digest(
        request.META.get("HTTP_AUTHORIZATION", "").encode(), f"Bearer {settings.METRICS_TOKEN}".encode()
    ):
        return JsonResponse({"error": {"message": "Send the metrics token as 'Authorization: Bearer <token>'.",
                                       "type": "invalid_request_error", "param": None, "code": "unauthorized"}},
                            status=401)
    started = time.perf_counter()
    body = exposition()
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    response["x-scrape-ms"] = str(int((time.perf_counter() - started) * 1000))
    return response
