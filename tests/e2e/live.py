"""A real deployment on loopback for tests: a fresh SQLite file (or a given DATABASE_URL), migrated and seeded
through bench.api_bench.seed (an organization with limits out of the way, a key, the two-expert system
`tiny-mix` on the tiny world), served by gunicorn with threads."""
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPLETION = {"model": "tiny-mix", "prompt": "hello", "max_tokens": 4, "temperature": 0, "seed": 1}

SEED = """
import json, sys
from pathlib import Path
import django
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
if connection.vendor == "sqlite":
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
from bench.api_bench import seed
world = json.loads(sys.argv[1])
print(seed(Path(world["base"]), {name: Path(path) for name, path in world["adapters"].items()}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deployment_env(workdir: Path, **extra: str) -> dict:
    """The environment of a fresh deployment under workdir: embedded defaults unless `extra` says otherwise."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERY_", "DATABASE_URL", "INFERENCE_", "MOSAIC_"))}
    env.update(MOSAIC_VAR_DIR=str(workdir / "var"), DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
               DJANGO_SETTINGS_MODULE="mosaic.settings", OMP_NUM_THREADS="1", LOG_LEVEL="ERROR",
               MOSAIC_WORKER_DTYPE="float32")  # the reference's arithmetic
    env.update(extra)
    return env


def seed_database(env: dict, world) -> str:
    """Migrate and seed the deployment's database; returns the organization's API key."""
    base, adapters = world
    argument = json.dumps({"base": str(base), "adapters": {k: str(v) for k, v in adapters.items()}})
    done = subprocess.run([sys.executable, "-c", SEED, argument], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def start_gunicorn(env: dict, *, threads: int = 16) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mosaic.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", str(threads), "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise AssertionError("gunicorn did not start")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_worker(env: dict, model_path, *, app: str, slots: int) -> subprocess.Popen:
    """A Celery worker of `app` serving the tiny world's queue with `slots` threads, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "base.bench-tiny", "-P", "threads",
         "-c", str(slots), "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=ROOT, env={**env, "MOSAIC_WORKER_BASE_MODEL_PATH": str(model_path)}, start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen, *, grace_s: float = 20) -> None:
    """SIGTERM to the worker's process group (its threads finish or give back their tasks), SIGKILL after grace_s."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def flushed_redis(url: str):
    """A Redis client on an emptied database, emptied again when the test ends (a generator for a fixture)."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()


def post(port: int, key: str, path: str, body: dict, *, headers: dict | None = None,
         timeout: float = 120) -> tuple[int, dict, dict]:
    """One request on its own connection: (status, JSON body, lower-cased headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=json.dumps(body),
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                    **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw or b"null"), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def sqlite_count(workdir: Path, sql: str) -> int:
    with sqlite3.connect(workdir / "db.sqlite3") as database:
        return database.execute(sql).fetchone()[0]
