"""The drills' short form: `python -m bench.drills` with small bounds against a stack of its own (PostgreSQL
database mosaic_drills_ci on DATABASE_URL's server, Redis db 8, gunicorn with threads, a Celery worker), run once
for this module; each test states one drill's invariants. Needs PostgreSQL and Redis on 127.0.0.1: skipped
without them. Run them alone with `pytest -m drills`."""
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import drills

pytestmark = [pytest.mark.drills, pytest.mark.xdist_group("drills")]

ROOT = Path(drills.__file__).resolve().parent.parent
SHORT_FORM = [
    "--quick", "--seconds", "8", "--kill-seconds", "8", "--deadline", "15", "--schemathesis-seconds", "16",
    "--webhook-copies", "4", "--clients", "20", "--database", "mosaic_drills_ci",
]
RUN_LIMIT_S = 420  # the drills bound themselves; this only stops a run that would hang the suite


def _services_reachable() -> str | None:
    """Why the drills cannot run here, or None."""
    import psycopg
    import redis

    try:
        with psycopg.connect(drills.postgres_server() + "/postgres", connect_timeout=5):
            pass
    except psycopg.Error as error:
        return f"PostgreSQL is not reachable: {error}"
    redis_url = os.environ.get("MOSAIC_DRILLS_REDIS_URL", "redis://127.0.0.1:6379/8")
    try:
        redis.Redis.from_url(redis_url, socket_timeout=5).ping()
    except redis.RedisError as error:
        return f"Redis is not reachable at {redis_url}: {error}"
    return None


def _run_drills(target: Path) -> tuple[int, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.drills", *SHORT_FORM, "--results", str(target)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM: the drills stop their processes and drop their database
        output, _ = process.communicate(timeout=60)
    return process.returncode, output


@pytest.fixture(scope="module")
def results(tmp_path_factory, worker_id):
    """The drills run once per test session: xdist workers share one run through a lock and a result file in
    the session's common temporary directory (two runs at once would drop each other's database)."""
    reason = _services_reachable()
    if reason:
        pytest.skip(reason)
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    target, failure = shared / "drills", shared / "drills.failed"
    with (shared / "drills.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.with_suffix(".json").exists() and not failure.exists():
            returncode, output = _run_drills(target)
            if returncode not in (0, 1):
                failure.write_text(f"bench.drills could not run (exit {returncode}):\n{output[-6000:]}")
    if failure.exists():
        pytest.fail(failure.read_text())
    return json.loads(target.with_suffix(".json").read_text())


def _failed_checks(result: dict) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in result["checks"] if not c["ok"]]


def test_load_has_no_5xx_and_bills_each_answer_once(results):
    load = results["drills"]["load"]
    assert load["served"] > 0
    assert _failed_checks(load) == []


def test_a_killed_worker_costs_a_503_or_nothing_and_never_bills_twice(results):
    kill = results["drills"]["kill"]
    assert _failed_checks(kill) == []


def test_a_webhook_storm_applies_each_event_once_and_ends_as_in_order_delivery(results):
    webhooks = results["drills"]["webhooks"]
    assert webhooks["deliveries"] == webhooks["events"] * webhooks["copies_each"]
    assert _failed_checks(webhooks) == []


def test_schemathesis_finds_no_5xx_and_no_schema_violation(results):
    schemathesis = results["drills"]["schemathesis"]
    assert _failed_checks(schemathesis) == []


def test_the_drills_leave_no_database_behind(results):
    import psycopg

    with psycopg.connect(drills.postgres_server() + "/postgres", connect_timeout=5) as connection:
        left = connection.execute("SELECT 1 FROM pg_database WHERE datname = 'mosaic_drills_ci'").fetchall()
    assert left == []


def test_hostile_inputs_are_refused_with_a_4xx_never_a_5xx(results):
    hostile = results["drills"]["hostile"]
    assert len(hostile["answers"]) >= 9
    assert _failed_checks(hostile) == []
