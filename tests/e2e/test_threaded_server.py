"""The embedded default (no broker: inference in the web process) behind a threaded server serves concurrent
requests, and keeps serving after a burst (it used to fail every later request with Celery's "Never call
result.get() within a task!")."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.live import COMPLETION, deployment_env, post, seed_database, sqlite_count, start_gunicorn, stop

CLIENTS = 16


@pytest.fixture
def embedded_server(tiny_world, tmp_path):
    env = deployment_env(tmp_path)
    key = seed_database(env, tiny_world)
    server, port = start_gunicorn(env, threads=CLIENTS)
    yield port, key, tmp_path
    stop(server)


def test_16_concurrent_completions_then_one_more_are_all_served_and_billed_once_each(embedded_server):
    port, key, workdir = embedded_server
    with ThreadPoolExecutor(CLIENTS) as pool:
        burst = list(pool.map(lambda _: post(port, key, "/v1/completions", COMPLETION), range(CLIENTS)))
    after = post(port, key, "/v1/completions", COMPLETION)
    statuses = [status for status, _body, _headers in [*burst, after]]
    assert statuses == [200] * (CLIENTS + 1), [body for status, body, _ in [*burst, after] if status != 200][:2]
    assert sqlite_count(workdir, "SELECT COUNT(*) FROM marketplace_usage") == CLIENTS + 1
    assert sqlite_count(workdir, "SELECT COUNT(*) FROM ledger_entry WHERE kind = 'usage.recorded'") == CLIENTS + 1
