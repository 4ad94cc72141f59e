"""The web process never imports torch, transformers or triton: it loads the WSGI app and every view, checks a
strategy configuration, builds a task message and reads a completion's stream from the broker with the
contract module alone (the engine lives in the GPU workers)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WEB_PROCESS = r"""
import json, os, sys, threading, time
from mosaic.wsgi import application
from django.urls import get_resolver

def views(patterns):
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):
            yield from views(pattern.url_patterns)
        else:
            yield pattern.callback
list(views(get_resolver().url_patterns))  # every view module is imported

from composition.strategy_specs import SPECS, validate_strategy_config
from gpu_workers import client, contract
from gpu_workers.streaming import RedisStreamPublisher
assert validate_strategy_config("logit_mixture", {}, ["1", "2"])["weights"] == {"1": 0.5, "2": 0.5}
assert validate_strategy_config("merge", {"method": "ties"}, ["1", "2"])["density"] == 0.5

message = contract.TaskMessage(
    request_id=f"no-torch-{os.getpid()}-{time.time_ns()}", deadline=time.time() + 30,
    base_model=contract.BaseModelRef("tiny", "/models/tiny"), experts=(contract.ExpertRef("1", "/a/1", "0" * 64),),
    strategy="single", strategy_config={}, params=contract.sampling_params({"max_tokens": 4}), prompt="hi",
    stream=True,
)
assert contract.TaskMessage.from_dict(json.loads(json.dumps(message.to_dict()))) == message
streamed = []
if os.environ.get("BROKER"):
    from celery import Celery
    import redis
    app = Celery("web-side", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
    worker = RedisStreamPublisher(redis.Redis.from_url(os.environ["BROKER"]), message.request_id)
    def fake_worker():  # what a GPU worker publishes for this request
        worker(contract.TokenEvent(0, "ok", 0))
        worker(contract.DoneEvent(contract.CompletionResult(message.request_id, (contract.ChoiceResult(0, "ok", "stop"),),
                                                            contract.Usage(1, 1), {"1": "1.000000"})))
    threading.Thread(target=fake_worker).start()
    streamed = [event.to_dict() for event in client.stream_from_broker(app, message, send_task=False)]
print(json.dumps({"heavy": sorted(m for m in ("torch", "transformers", "triton") if m in sys.modules),
                  "streamed": streamed}))
"""


def redis_url() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return None
    return "redis://127.0.0.1:6379/12"


def test_the_web_process_serves_without_importing_torch():
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "mosaic.settings", "PYTHONPATH": str(ROOT)}
    broker = redis_url()
    if broker:  # Celery reads CELERY_BROKER_URL before any app's own setting (CI sets it): the same broker
        environment["BROKER"] = environment["CELERY_BROKER_URL"] = broker
    ran = subprocess.run([sys.executable, "-c", WEB_PROCESS], cwd=ROOT, env=environment, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    if broker:
        assert [event["type"] for event in report["streamed"]] == ["token", "done"]
    else:
        pytest.skip("Redis is not reachable: the stream part was not run (the imports were checked)")
