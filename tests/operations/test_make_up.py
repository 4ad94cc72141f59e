"""`make up` starts every process of a deployment (web, a worker per registered base model, background, beat,
sequencer, witness) on PostgreSQL and Redis in the production profile; /readyz turns 200 once the worker has its base
model loaded, a completion succeeds through it, its request id is in the web's and the worker's JSON log lines
and in its usage row, the web and the worker serve their metrics, and a period close queued as the settlement
page queues it runs on the background worker to its end."""
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.live import ROOT, free_port, seed_database

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

POSTGRES = os.environ.get("MOSAIC_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MOSAIC_TEST_UP_REDIS_URL", "redis://127.0.0.1:6379/9")
# A database of its own, dropped and created again (set it where several people share one server).
DATABASE_NAME = os.environ.get("MOSAIC_TEST_UP_DATABASE", f"mosaic_up_{os.getpid()}")
PROCESSES = ("web", "worker-bench-tiny", "background", "beat", "sequencer", "witness")


QUEUE_A_CLOSE = """
import django
django.setup()
from django.utils import timezone
from marketplace.credit.settlement import period_close_request
from marketplace.credit.tasks import close_period_job
job = period_close_request(start=None, end=timezone.now().date())
close_period_job.delay(job.pk)
print(job.pk)
"""


def reachable(url: str) -> bool:
    import psycopg
    import redis

    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=2).close()
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture
def database():
    import psycopg

    if not reachable(REDIS_URL):
        pytest.skip("make up needs PostgreSQL and Redis on 127.0.0.1")
    name = DATABASE_NAME
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES}/{name}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def request(port: int, method: str, path: str, *, body=None, key=None) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Host": "127.0.0.1", "X-Forwarded-Proto": "https", "Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        text = raw.decode()
        payload = json.loads(text) if response.getheader("Content-Type", "").startswith("application/json") else text
        return response.status, payload, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def json_lines(output: str, process: str) -> list[dict]:
    """The JSON log lines honcho printed for a process ("HH:MM:SS web.1 | {...}")."""
    lines = []
    for line in output.splitlines():
        prefix, bar, rest = line.partition("| ")
        if bar and prefix.split()[-1:] == [f"{process}.1"] and rest.startswith("{"):
            try:
                lines.append(json.loads(rest))
            except json.JSONDecodeError:
                pass
    return lines


def test_make_up_starts_every_process_and_serves_a_completion(tiny_world, database, tmp_path):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "DATABASE_URL", "MOSAIC_", "LOG_", "DJANGO_ALLOW_ASYNC_UNSAFE"))}
    env.update(
        MOSAIC_ENV="production", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="127.0.0.1",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https", DATABASE_URL=database,
        CELERY_BROKER_URL=REDIS_URL, MOSAIC_VAR_DIR=str(tmp_path / "var"), MOSAIC_BIND=f"127.0.0.1:{port}",
        MOSAIC_WORKER_METRICS_FIRST_PORT=str(metrics_port), WORKER_CONCURRENCY="4", BACKGROUND_CONCURRENCY="2",
        OMP_NUM_THREADS="1", PROCFILE=str(tmp_path / "Procfile"), DJANGO_SETTINGS_MODULE="mosaic.settings",
    )
    key = seed_database(env, tiny_world)
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        # -o: the virtual environment is taken as up to date (the test must not reinstall it).
        up = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/bin/activate", "up"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline:
            assert up.poll() is None, log_path.read_text()[-4000:]
            try:
                ready = request(port, "GET", "/readyz")
                if ready[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert ready and ready[0] == 200, (ready, log_path.read_text()[-4000:])
        assert ready[1]["checks"]["workers"]["serving"] == {"bench-tiny": ["worker-bench-tiny@" + os.uname().nodename]}

        status, body, headers = request(port, "POST", "/v1/completions", key=key,
                                        body={"model": "tiny-mix", "prompt": "hello", "max_tokens": 4, "seed": 1})
        assert status == 200, body
        request_id = headers["x-request-id"]
        assert body["usage"]["completion_tokens"] > 0

        status, web_metrics, _ = request(port, "GET", "/metrics")
        assert status == 200
        assert 'mosaic_completions_total{system="tiny-mix"} 1.0' in web_metrics
        assert 'mosaic_time_to_first_token_seconds_count{system="tiny-mix"} 1.0' in web_metrics
        assert 'mosaic_queue_depth{base_model="bench-tiny"} 0.0' in web_metrics
        worker_metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'mosaic_worker_completions_total{base_model="bench-tiny",outcome="ok"} 1.0' in worker_metrics
        assert 'mosaic_adapter_pool_resident_adapters{base_model="base"} 2.0' in worker_metrics

        deadline = time.monotonic() + 30  # honcho's output is line-buffered per process: wait for the lines
        while time.monotonic() < deadline:
            output = log_path.read_text()
            web = [line for line in json_lines(output, "web") if line.get("logger") == "mosaic.request"
                   and line.get("path") == "/v1/completions"]
            worker = [line for line in json_lines(output, "worker-bench-tiny") if line.get("logger") == "mosaic.tasks"
                      and line.get("state") == "SUCCESS"]
            if web and worker:
                break
            time.sleep(1)
        assert [line["request_id"] for line in web] == [request_id], output[-4000:]
        assert [line["request_id"] for line in worker] == [request_id], output[-4000:]
        assert worker[0]["completion_tokens"] == body["usage"]["completion_tokens"]
        for process in PROCESSES:
            assert f" {process}.1 " in output or f" {process}.1 |" in output, f"{process} never started"

        # An operator's period close, queued as the settlement page queues it: the background worker runs it.
        queued = subprocess.run([sys.executable, "-c", QUEUE_A_CLOSE], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
        assert queued.returncode == 0, queued.stderr
        job_id = int(queued.stdout.strip().splitlines()[-1])
        import psycopg

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with psycopg.connect(database) as connection:
                state, stage, result, error = connection.execute(
                    "SELECT state, stage, result, error FROM marketplace_periodclosejob WHERE id = %s", [job_id]).fetchone()
            if state in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert (state, error) == ("succeeded", ""), log_path.read_text()[-4000:]
        assert stage == "statements" and result["created"] is True
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)  # honcho stops every process it started
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()

    import psycopg

    with psycopg.connect(database) as connection:
        rows = connection.execute("SELECT request_id FROM marketplace_usage").fetchall()
    assert rows == [(request_id,)]
