"""MOSAIC_ENV=production: each insecure default is refused at start with a message naming it, and
`manage.py check --deploy` is clean. Each case starts a fresh Python process with its own environment."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = "postgres://mosaic@db.internal:5432/mosaic"  # never connected to: settings and checks only


def production_env(tmp_path, **changes) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOSAIC_", "DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "SECURE_",
                                "CELERY_", "LOG_", "DJANGO_ALLOW_ASYNC_UNSAFE"))}
    env.update(MOSAIC_ENV="production", MOSAIC_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="mosaic.settings",
               SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="mosaic.example", DATABASE_URL=POSTGRES_URL)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("changes", "named"), [
    ({"SECRET_KEY": None}, "SECRET_KEY is the embedded default"),
    ({"SECRET_KEY": "short-but-not-embedded"}, "SECRET_KEY is weak"),
    ({"DEBUG": "true"}, "DEBUG is on"),
    ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS is empty"),
    ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS is empty"),
    ({"DATABASE_URL": None}, "DATABASE_URL is SQLite"),
], ids=["embedded-secret", "weak-secret", "debug", "no-hosts", "blank-hosts", "sqlite"])
def test_production_refuses_to_start_with_an_insecure_default_and_names_it(tmp_path, changes, named):
    done = manage(production_env(tmp_path, **changes), "check")
    assert done.returncode != 0
    refusal = done.stderr.strip().splitlines()[-1]
    assert refusal.startswith("django.core.exceptions.ImproperlyConfigured: MOSAIC_ENV=production refuses to start")
    assert named in refusal
    assert ";" not in refusal, "only the one insecure setting is named"


def test_production_names_every_insecure_default_at_once(tmp_path):
    done = manage(production_env(tmp_path, SECRET_KEY=None, DEBUG="1", ALLOWED_HOSTS=None, DATABASE_URL=None), "check")
    assert done.returncode != 0
    for named in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DATABASE_URL is SQLite"):
        assert named in done.stderr


def test_the_demo_profile_keeps_the_embedded_defaults(tmp_path):
    env = production_env(tmp_path, MOSAIC_ENV=None, SECRET_KEY=None, ALLOWED_HOSTS=None, DATABASE_URL=None)
    done = manage(env, "check")
    assert done.returncode == 0, done.stderr


def test_an_unknown_profile_is_refused(tmp_path):
    done = manage(production_env(tmp_path, MOSAIC_ENV="staging"), "check")
    assert done.returncode != 0 and "MOSAIC_ENV='staging' is not a profile" in done.stderr


def test_check_deploy_is_clean_in_the_production_profile(tmp_path):
    done = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_check_deploy_warns_in_the_demo_profile(tmp_path):
    """The control: the same check does find the demo's settings insecure."""
    env = production_env(tmp_path, MOSAIC_ENV=None, SECRET_KEY=None, DATABASE_URL=None)
    done = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W009", "security.W012", "security.W016"):
        assert warning in done.stderr + done.stdout


REQUESTS = """
import django, json
django.setup()
from django.test import Client
client = Client()
plain = client.get("/api/schema/", HTTP_HOST="mosaic.example")
probe = client.get("/healthz", HTTP_HOST="mosaic.example")
proxied = client.get("/healthz", HTTP_HOST="mosaic.example", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({"plain": [plain.status_code, plain.headers.get("Location")],
                  "probe": probe.status_code,
                  "hsts": proxied.headers.get("Strict-Transport-Security"),
                  "cookies": [django.conf.settings.SESSION_COOKIE_SECURE, django.conf.settings.CSRF_COOKIE_SECURE]}))
"""


def test_production_redirects_to_https_sends_hsts_behind_the_proxy_and_lets_probes_through(tmp_path):
    import json

    env = production_env(tmp_path, SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https")
    done = subprocess.run([sys.executable, "-c", REQUESTS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://mosaic.example/api/schema/"]
    assert seen["probe"] == 200
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert seen["cookies"] == [True, True]


HEALTHZ_LOG_LINE = """
import django
django.setup()
from django.test import Client
Client().get("/healthz", HTTP_HOST="mosaic.example", HTTP_X_FORWARDED_PROTO="https")
"""


@pytest.mark.parametrize("profile", ["demo", "production"])  # /healthz reaches no database: none is needed
def test_a_requests_log_line_is_human_readable_in_the_demo_and_json_in_production(tmp_path, profile):
    import json

    env = production_env(tmp_path, SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https", MOSAIC_LOG_LEVEL="INFO",
                         **({"MOSAIC_ENV": None, "DATABASE_URL": None} if profile == "demo" else {}))
    done = subprocess.run([sys.executable, "-c", HEALTHZ_LOG_LINE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "mosaic.request" in line]
    if profile == "demo":
        assert " INFO mosaic.request [" in line and "/healthz" in line and not line.startswith("{")
        request_id = line.split("[", 1)[1].split("]", 1)[0]
        assert len(request_id) == 32
    else:
        record = json.loads(line)
        assert record["logger"] == "mosaic.request" and record["path"] == "/healthz" and len(record["request_id"]) == 32
