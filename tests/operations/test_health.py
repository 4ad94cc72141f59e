"""/healthz and /readyz with the real database; the broker is a real Redis (up) or a closed port (down)."""
import socket

import pytest

from tests.conftest import is_postgres, needs_redis

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def broker(settings, monkeypatch):
    """Celery with a real broker instead of eager; the URL is set by the test."""
    from mosaic.celery import app

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery reads it before its own setting (as CI sets it)
    settings.READINESS_TIMEOUT_SECONDS = 0.5
    before = app.conf.broker_url, app.conf.task_always_eager

    def use(url: str) -> None:
        app.conf.broker_url, app.conf.task_always_eager = url, False

    yield use
    app.conf.broker_url, app.conf.task_always_eager = before


def test_healthz_answers_while_the_process_lives(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert len(response["x-request-id"]) == 32


def test_readyz_is_ready_in_the_embedded_default(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": True, "detail": "postgresql" if is_postgres() else "sqlite"}
    assert checks["broker"]["ok"] and checks["broker"]["detail"].startswith("embedded")
    assert checks["workers"]["ok"]


def test_readyz_is_503_naming_the_broker_when_it_is_down(client, broker):
    broker(f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["missing"] == ["broker", "workers"]
    assert "did not answer" in body["checks"]["broker"]["detail"]


@needs_redis
def test_readyz_is_200_when_the_broker_is_up_and_no_system_needs_a_worker(client, broker):
    broker(REDIS_URL)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["broker"] == {"ok": True, "detail": REDIS_URL}


@needs_redis
def test_readyz_is_503_naming_a_base_model_no_worker_serves(client, broker, served):
    broker(REDIS_URL)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["missing"] == ["workers"]
    assert "for: tiny-base" in body["checks"]["workers"]["detail"]
    assert body["checks"]["workers"]["serving"] == {"tiny-base": []}
