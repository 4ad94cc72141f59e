"""Drills: `python -m bench.drills [--quick] [--drills load,kill,webhooks,schemathesis,hostile]`.

Sets up a whole stack of its own in a temporary directory and tears it down at the end, on failure and on
Ctrl-C too: a fresh PostgreSQL database (DATABASE_URL's server, database `mosaic_drills`, created and dropped),
Redis db 8 as the broker (flushed before and after), migrations, a minimal world (a tiny 2-layer Llama with a
character tokenizer and two LoRA experts, no download; a two-expert system; organizations on a plan whose limits
are out of the way, an API key, a contributor with a Stripe account), gunicorn with threads on a free loopback
port and a real Celery worker process (`celery -A mosaic worker -Q base.<name> -P threads`, as
gpu_workers/tasks.py documents). All traffic goes to 127.0.0.1; every drill is bounded in requests and time.

1. load: 20 clients on POST /v1/completions (every fourth one a streamed chat completion) for --seconds.
   Invariants: 0 × 5xx, no client left without an answer, usage rows = `usage.recorded` entries = answers
   served in full, `manage.py ledger verify` green.
2. kill: the same load; the worker gets kill -9 a quarter of the way in and is restarted. Invariants: every
   answer is a 200 or a 503 with Retry-After, none later than the inference deadline (INFERENCE_DEADLINE_SECONDS)
   plus a margin, nothing billed twice (the same three counts agree), ledger verify green.
3. webhooks: Stripe events signed with the configured secrets (the stripe SDK's WebhookSignature), for a
   subscription (/api/stripe/webhook) and a connected account (/api/stripe/connect-webhook). A reference
   twin gets each event once, in order; the storm twin gets every event many times, concurrently, shuffled.
   Invariants: every delivery answered 200, each event applied once (one answer per event that is not
   "duplicate", one StripeEvent row), the storm twin ends in the reference twin's state.
4. schemathesis: `schemathesis run` against the served OpenAPI schema on /api (DRF token) and /v1 (API key)
   for --schemathesis-seconds. Invariants: 0 × 5xx (not_a_server_error), 0 schema violations
   (response_schema_conformance). Undeclared status codes are counted, not judged.
5. hostile: the inputs schemathesis does not generate (deeply nested JSON, a body over 2 MB, top_p 0, a seed
   beyond 64 bits, a lone surrogate, a prompt beyond the context, malformed signed webhooks). Invariant: each
   one refused with a 4xx in the project's JSON error shape, none a 5xx.

Each drill prints its table; the run writes bench/results/drills.md and .json (git commit, load average).
Exit status: 0 when every invariant holds, 1 otherwise, 2 when the stack could not be set up.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
DRILLS = ("load", "kill", "webhooks", "schemathesis", "hostile")
BASE_MODEL_NAME = "drills-tiny"
SYSTEM_SLUG = "drills-mix"
WEBHOOK_SECRET = "whsec_drills_billing"
CONNECT_WEBHOOK_SECRET = "whsec_drills_connect"
RESPONSE_MARGIN_S = 10  # how long past the inference deadline a client waits before it counts as left hanging
KILL_MAX_TOKENS = 48  # longer answers in the kill drill, so that the worker holds tasks when it dies


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def check(name: str, ok: bool, detail: str) -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail}


# ---------------------------------------------------------------------------------------------------------------
# The stack: database, broker, world, gunicorn, worker. Everything it starts it stops in close().


class SetupFailed(Exception):
    pass


@dataclass
class Stack:
    postgres_server: str
    database: str
    redis_url: str
    deadline_s: int
    gunicorn_workers: int
    gunicorn_threads: int
    worker_app: str = "mosaic"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mosaic-drills-")))
    env: dict = field(default_factory=dict)
    port: int = 0
    key: str = ""
    user_token: str = ""
    world: dict = field(default_factory=dict)
    gunicorn: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    worker_starts: int = 0
    database_created: bool = False
    setup_s: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- setting up

    def open(self) -> None:
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mosaic.settings",
            "DATABASE_URL": f"{self.postgres_server}/{self.database}",
            "CELERY_BROKER_URL": self.redis_url,
            "CELERY_RESULT_BACKEND": self.redis_url,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "MOSAIC_VAR_DIR": str(self.workdir / "var"),
            "INFERENCE_DEADLINE_SECONDS": str(self.deadline_s),
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_CONNECT_WEBHOOK_SECRET": CONNECT_WEBHOOK_SECRET,
            "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing the drills do may reach Stripe; this fails fast
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
            "TRITON_INTERPRET": "1",
        }
        self.env.pop("BASE_MODEL_DIR", None)
        mark = opened = time.monotonic()
        self._flush_redis()
        self._postgres_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self._postgres_admin(f'CREATE DATABASE "{self.database}"')
        self.database_created = True
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        self.setup_s["database"] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()
        self.world = seed_world(self.workdir / "world")
        self.key, self.user_token = self.world.pop("key"), self.world.pop("user_token")
        self.setup_s["world"] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()
        self.spawn_worker()  # loads torch and the model while gunicorn starts
        self.start_gunicorn()
        self.setup_s["gunicorn"] = round(time.monotonic() - mark, 1)
        self.setup_s["worker"] = round(self.wait_for_worker(mark), 1)  # started beside gunicorn
        self.setup_s["total"] = round(time.monotonic() - opened, 1)

    def _postgres_admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.postgres_server + "/postgres", autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql)

    def _flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url, socket_timeout=10).flushdb()

    def _spawn(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        # A session of its own: the whole group (gunicorn's workers too) is stopped by its id, and a Ctrl-C in the
        # terminal reaches only this process, which then stops the group in order.
        with open(self.workdir / f"{name}.log", "ab") as log:
            return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start_gunicorn(self) -> None:
        self.port = free_port()
        self.gunicorn = self._spawn("gunicorn", [
            sys.executable, "-m", "gunicorn", "mosaic.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
            "--worker-class", "gthread", "--workers", str(self.gunicorn_workers),
            "--threads", str(self.gunicorn_threads), "--backlog", "256", "--timeout", "120",
            "--graceful-timeout", "5", "--log-level", "warning",
        ], self.env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.gunicorn.poll() is not None:
                raise SetupFailed(f"gunicorn exited early; see {self.workdir / 'gunicorn.log'}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {self.key}"})
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SetupFailed("gunicorn did not answer /v1/models within 90 s")

    def start_worker(self) -> float:
        """Starts the Celery worker and waits until it consumes its queue. Returns the seconds it took."""
        started = time.monotonic()
        self.spawn_worker()
        return self.wait_for_worker(started)

    def spawn_worker(self) -> None:
        self.worker_starts += 1
        # INFO: the worker's "ready." line, which wait_for_worker reads, is an INFO record (LOG_LEVEL sets Celery's too)
        env = {**self.env, "MOSAIC_WORKER_BASE_MODEL_PATH": self.world["base_path"], "LOG_LEVEL": "INFO"}
        self.worker = self._spawn(f"worker-{self.worker_starts}", [
            sys.executable, "-m", "celery", "-A", self.worker_app, "worker", "-Q", f"base.{BASE_MODEL_NAME}",
            "-P", "threads", "-c", "64", "-n", f"drills{self.worker_starts}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ], env)

    def wait_for_worker(self, started: float) -> float:
        log_path = self.workdir / f"worker-{self.worker_starts}.log"
        while time.monotonic() < started + 120:
            if self.worker.poll() is not None:
                raise SetupFailed(f"the Celery worker exited early; see {log_path}")
            if b" ready." in log_path.read_bytes():
                return time.monotonic() - started
            time.sleep(0.2)
        raise SetupFailed(f"the Celery worker was not ready within 120 s; see {log_path}")

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=30)

    # -- reading the database

    def counts(self) -> dict:
        from django.db import connections

        from ledger.models import Entry
        from marketplace.models import Usage

        connections.close_all()  # a fresh connection: see every commit made by the server
        return {"usage_rows": Usage.objects.count(),
                "usage_recorded_entries": Entry.objects.filter(kind="usage.recorded").count()}

    def broker_backlog(self) -> dict:
        """Messages the broker still holds: delivered to a worker and never acknowledged (Celery's Redis
        transport keeps them in the hash `unacked` until the visibility timeout), and waiting in the queue."""
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=10)
        return {"unacked": client.hlen("unacked"), "queued": client.llen(f"base.{BASE_MODEL_NAME}")}

    def ledger_verify(self) -> tuple[bool, str]:
        completed = subprocess.run([sys.executable, "manage.py", "ledger", "verify"], cwd=ROOT, env=self.env,
                                   capture_output=True, text=True, timeout=300)
        output = (completed.stdout + completed.stderr).strip().splitlines()
        return completed.returncode == 0, (output[-1] if output else f"exit {completed.returncode}")

    # -- tearing down

    def close(self) -> None:
        """Stops every process this stack started (their groups, by id), flushes the broker, drops the database
        and removes the temporary directory. Safe to call twice and after a partial open()."""
        for process in (self.worker, self.gunicorn):
            _stop(process)
        self.worker = self.gunicorn = None
        try:
            self._flush_redis()
        except Exception as error:  # noqa: BLE001 - keep tearing down
            print(f"drills: could not flush {self.redis_url}: {error}", file=sys.stderr)
        if self.database_created:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001 - Django may not be set up yet
                pass
            try:
                self._postgres_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                self.database_created = False
            except Exception as error:  # noqa: BLE001
                print(f"drills: could not drop database {self.database}: {error}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _stop(process: subprocess.Popen | None) -> None:
    """SIGTERM to the process's group, SIGKILL to what is left of it after 10 s."""
    if process is None:
        return
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:  # what did not stop, and children (gunicorn's workers) that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print(f"drills: process {process.pid} did not exit after SIGKILL", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# The world, seeded through the same services the API uses


def seed_world(root: Path) -> dict:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from bench.api_bench import build_world
    from composition.experts import adapter_content_sha256
    from marketplace.models import (
        BaseModel, Contributor, Expert, ExpertVersion, LicenseTerms, Plan, Subscription,
    )
    from marketplace.services.organizations import api_key_create, organization_create
    from marketplace.services.systems import system_create

    base, adapters = build_world(root)
    User = get_user_model()
    base_model = BaseModel.objects.create(name=BASE_MODEL_NAME, local_path=str(base), architecture="LlamaForCausalLM",
                                          hidden_size=64, num_layers=2, vocab_size=100, content_hash="0" * 64)
    expert_ids = []
    for name, path in adapters.items():
        contributor = Contributor.objects.create(user=User.objects.create_user(username=name, password=None),
                                                 display_name=name.title())
        expert = Expert.objects.create(owner=contributor, slug=name, name=name, base_model=base_model)
        expert.current_version = ExpertVersion.objects.create(
            expert=expert, number=1, sha256=adapter_content_sha256(path), storage_path=str(path),
            status=ExpertVersion.Status.VALID)
        expert.license = LicenseTerms.objects.create(expert=expert, spdx_id="Apache-2.0")
        expert.save()
        expert_ids.append(expert.pk)
    system_create(slug=SYSTEM_SLUG, name="Drills mix", base_model=base_model, strategy="logit_mixture",
                  strategy_config={}, expert_ids=expert_ids, actor="drills")
    # Limits out of the way (the drills measure the stack, not the quota), no monthly fee, no Stripe involved.
    plan = Plan.objects.create(slug="drills", name="Drills", price_per_1k_tokens_minor=50,
                               requests_per_minute=10_000_000, tokens_per_minute=1_000_000_000,
                               monthly_token_quota=10**15)
    owner = User.objects.create_user(username="drills-owner", password=None)
    organization = organization_create(name="drills-co", owner=owner, domains=[])
    Subscription.objects.create(organization=organization, plan=plan, status=Subscription.Status.ACTIVE)
    key = api_key_create(organization=organization, name="drills")[1]

    # Twins for the webhook storm: one organization and one contributor get the events in order, the other the
    # storm. Both start in the same state.
    twins = {}
    for twin in ("reference", "storm"):
        twin_owner = User.objects.create_user(username=f"{twin}-owner", password=None)
        twin_organization = organization_create(name=f"{twin}-co", owner=twin_owner, domains=[])
        subscription = Subscription.objects.create(
            organization=twin_organization, plan=plan, status=Subscription.Status.INCOMPLETE,
            stripe_subscription_id=f"sub_drills_{twin}")
        contributor = Contributor.objects.create(
            user=User.objects.create_user(username=f"{twin}-contributor", password=None),
            display_name=f"{twin} contributor", stripe_account_id=f"acct_drills_{twin}")
        twins[twin] = {"organization": twin_organization.pk, "subscription": subscription.pk,
                       "stripe_subscription_id": subscription.stripe_subscription_id,
                       "contributor": contributor.pk, "stripe_account_id": contributor.stripe_account_id}
    return {"base_path": str(base), "key": key, "user_token": Token.objects.create(user=owner).key,
            "organization": organization.pk, "twins": twins}


# ---------------------------------------------------------------------------------------------------------------
# Clients


@dataclass
class Outcome:
    kind: str  # "completion" or "stream"
    status: int  # 0: no answer (connection refused or reset, or no answer within the client's patience)
    seconds: float
    served: bool  # the whole answer came back: a 200 body, or a stream that ended with its final usage chunk
    retry_after: str | None = None
    detail: str = ""
    sent_at: float = 0.0  # seconds from the start of the drill


COMPLETION = {"model": SYSTEM_SLUG, "prompt": "hello", "max_tokens": 4, "temperature": 0}
STREAMED_CHAT = {"model": SYSTEM_SLUG, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4,
                 "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


def call_once(port: int, key: str, kind: str, patience_s: float, max_tokens: int = 4) -> Outcome:
    path, body = ("/v1/chat/completions", STREAMED_CHAT) if kind == "stream" else ("/v1/completions", COMPLETION)
    body = {**body, "max_tokens": max_tokens}
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=patience_s)
    try:
        connection.request("POST", path, body=json.dumps(body).encode(),
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    except (http.client.HTTPException, OSError) as error:
        return Outcome(kind, 0, time.monotonic() - started, False, detail=type(error).__name__)
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    retry_after = response.getheader("Retry-After")
    if response.status != 200:
        return Outcome(kind, response.status, elapsed, False, retry_after, raw[:200].decode("utf-8", "replace"))
    if kind == "completion":
        return Outcome(kind, 200, elapsed, True, retry_after)
    chunks = [line[6:] for line in raw.decode("utf-8", "replace").split("\n") if line.startswith("data: ")]
    payloads = [json.loads(chunk) for chunk in chunks if chunk != "[DONE]"]
    errors = [p for p in payloads if "error" in p]
    served = bool(chunks) and chunks[-1] == "[DONE]" and not errors and any(p.get("usage") for p in payloads)
    return Outcome(kind, 200, elapsed, served, retry_after, json.dumps(errors[0])[:200] if errors else "")


def run_clients(*, port: int, key: str, clients: int, seconds: float, patience_s: float,
                max_requests_per_client: int, during=None, max_tokens: int = 4) -> tuple[list[Outcome], float, dict]:
    """`clients` threads in a closed loop (every fourth one streams chat) for `seconds`, or, given `during`,
    until `during(started)` returns (the kill drill's fault runs on this thread meanwhile). Returns the
    outcomes, the wall time and what `during` returned."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loop(index: int) -> None:
        kind = "stream" if index % 4 == 3 else "completion"
        for _ in range(max_requests_per_client):
            if stop.is_set():
                return
            sent_at = time.monotonic() - started
            outcome = call_once(port, key, kind, patience_s, max_tokens)
            outcome.sent_at = sent_at
            with lock:
                outcomes.append(outcome)

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,), daemon=True, name=f"drill-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    extra = {}
    try:
        if during is not None:
            extra = during(started)
        else:
            stop.wait(seconds)
    finally:
        stop.set()
    stopped = time.monotonic()
    for thread in threads:  # each thread ends within one request's patience of the stop
        thread.join(timeout=max(0.0, stopped + patience_s + 5 - time.monotonic()))
    with lock:
        return list(outcomes), time.monotonic() - started, extra


def summarize(outcomes: list[Outcome], wall_s: float) -> dict:
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        label = str(outcome.status) if outcome.status else "no answer"
        if outcome.status == 200 and not outcome.served:
            label = "200, stream ended in error"
        statuses[label] = statuses.get(label, 0) + 1
    served = [o.seconds * 1000 for o in outcomes if o.served]
    failures: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.served and outcome.detail:
            # One line, numbers (process ids, transaction ids) folded, so that alike failures count together.
            text = re.sub(r"\d+", "N", " ".join(outcome.detail.split()))[:160]
            failures[text] = failures.get(text, 0) + 1
    return {
        "requests": len(outcomes), "served": len(served), "statuses": dict(sorted(statuses.items())),
        "wall_s": round(wall_s, 1), "served_per_s": round(len(served) / wall_s, 1) if wall_s else 0.0,
        "p50_ms": _rounded(percentile(served, 50)), "p99_ms": _rounded(percentile(served, 99)),
        "max_ms": _rounded(max((o.seconds * 1000 for o in outcomes), default=None)),
        "failure_samples": dict(sorted(failures.items(), key=lambda item: -item[1])[:5]),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def billing_checks(stack: Stack, before: dict, served: int) -> list[dict]:
    after = stack.counts()
    usage = after["usage_rows"] - before["usage_rows"]
    entries = after["usage_recorded_entries"] - before["usage_recorded_entries"]
    verified, verify_line = stack.ledger_verify()
    return [
        check("usage rows = answers served", usage == served, f"{usage} usage rows, {served} answers served"),
        check("usage.recorded entries = usage rows", entries == usage, f"{entries} entries, {usage} rows"),
        check("ledger verify", verified, verify_line),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Drill 1: load


def drill_load(stack: Stack, args) -> dict:
    before = stack.counts()
    patience = stack.deadline_s + RESPONSE_MARGIN_S
    outcomes, wall, _ = run_clients(port=stack.port, key=stack.key, clients=args.clients, seconds=args.seconds,
                                    patience_s=patience, max_requests_per_client=args.max_requests_per_client)
    summary = summarize(outcomes, wall)
    server_errors = sum(1 for o in outcomes if o.status >= 500)
    unanswered = sum(1 for o in outcomes if o.status == 0)
    broken_streams = sum(1 for o in outcomes if o.status == 200 and not o.served)
    checks = [
        check("0 × 5xx", server_errors == 0, f"{server_errors} of {len(outcomes)}"),
        check("every client answered in time", unanswered == 0,
              f"{unanswered} without an answer within {patience} s"),
        check("no stream ended in error", broken_streams == 0, f"{broken_streams}"),
        check("requests made", len(outcomes) > 0, f"{len(outcomes)}"),
        *billing_checks(stack, before, summary["served"]),
    ]
    return {"clients": args.clients, "seconds": args.seconds, **summary, "checks": checks}


# ---------------------------------------------------------------------------------------------------------------
# Drill 2: kill -9 of the worker mid-load


def drill_kill(stack: Stack, args) -> dict:
    """Load for a quarter of --kill-seconds, kill -9 of the worker, restart it, then load for half of
    --kill-seconds more once it is back, and at least until the requests in flight at the kill have had their
    answer (by their deadline) and their clients have sent again."""
    before = stack.counts()
    patience = stack.deadline_s + RESPONSE_MARGIN_S
    moments = {}

    def fault(started: float) -> dict:
        time.sleep(args.kill_seconds * 0.25)
        # Kill while the worker holds tasks (delivered, not yet acknowledged): a worker idle at that instant would
        # lose nothing and prove nothing.
        waited_until = time.monotonic() + 10
        while stack.broker_backlog()["unacked"] == 0 and time.monotonic() < waited_until:
            time.sleep(0.01)
        moments["in_flight_at_kill"] = stack.broker_backlog()["unacked"]
        killed = time.monotonic()
        moments["killed_at_s"] = round(killed - started, 1)
        stack.kill_worker()
        moments["worker_restart_s"] = round(stack.start_worker(), 1)
        moments["back_at_s"] = round(time.monotonic() - started, 1)
        in_flight_answered = killed + stack.deadline_s + 2  # every client then waits no more on the dead worker
        time.sleep(max(args.kill_seconds * 0.5, in_flight_answered - time.monotonic()))
        return moments

    outcomes, wall, _ = run_clients(
        port=stack.port, key=stack.key, clients=args.clients, seconds=args.kill_seconds, patience_s=patience,
        max_requests_per_client=args.max_requests_per_client, during=fault, max_tokens=KILL_MAX_TOKENS)
    summary = summarize(outcomes, wall)
    backlog = stack.broker_backlog()
    allowed = [o for o in outcomes if o.status == 200 or (o.status == 503 and o.retry_after)]
    others = len(outcomes) - len(allowed)
    late = [o for o in outcomes if o.status and o.seconds > patience]
    unanswered = sum(1 for o in outcomes if o.status == 0)
    served_after = sum(1 for o in outcomes if o.served and o.sent_at >= moments.get("back_at_s", float("inf")))
    checks = [
        check("the kill hit tasks in flight", moments.get("in_flight_at_kill", 0) > 0,
              f"{moments.get('in_flight_at_kill', 0)} unacknowledged tasks at the kill"),
        check("every answer a 200 or a 503 with Retry-After", others == 0,
              f"{others} of {len(outcomes)} were something else"),
        check(f"every client answered within the deadline + {RESPONSE_MARGIN_S} s", not late and unanswered == 0,
              f"{unanswered} without an answer, {len(late)} late (deadline {stack.deadline_s} s)"),
        check("answers served after the restart", served_after > 0, f"{served_after}"),
        *billing_checks(stack, before, summary["served"]),
    ]
    return {"clients": args.clients, "seconds": args.kill_seconds, "deadline_s": stack.deadline_s, **moments,
            **summary, "broker_after": backlog, "checks": checks}


# ---------------------------------------------------------------------------------------------------------------
# Drill 3: webhook replay storm


def webhook_events(twin: dict, tag: str, start: int) -> list[tuple[str, dict]]:
    """(endpoint, event) in the order Stripe created them, for one twin's subscription and connected account.
    The last two subscription events share one second: a failed payment and the retry that paid it."""
    subscription, account = twin["stripe_subscription_id"], twin["stripe_account_id"]
    metadata = {"mosaic_organization": str(twin["organization"])}

    def subscription_object(status: str, period_start: int) -> dict:
        return {"id": subscription, "object": "subscription", "status": status, "metadata": metadata,
                "current_period_start": period_start, "current_period_end": period_start + 30 * 86400}

    def invoice_object(number: int, status: str, attempts: int) -> dict:
        return {"id": f"in_drills_{tag}_{number}", "object": "invoice", "subscription": subscription,
                "status": status, "paid": status == "paid", "attempt_count": attempts,
                "subscription_details": {"metadata": metadata}}

    def account_object(enabled: bool) -> dict:
        return {"id": account, "object": "account", "payouts_enabled": enabled, "charges_enabled": enabled,
                "capabilities": {"transfers": "active" if enabled else "inactive"}}

    billing, connect = "/api/stripe/webhook", "/api/stripe/connect-webhook"
    timeline = [
        (billing, 0, "customer.subscription.created", subscription_object("incomplete", start)),
        (connect, 5, "account.updated", account_object(False)),
        (billing, 10, "invoice.paid", invoice_object(1, "paid", 1)),
        (billing, 11, "customer.subscription.updated", subscription_object("active", start)),
        (connect, 15, "account.updated", account_object(True)),
        (billing, 20, "invoice.payment_failed", invoice_object(2, "open", 1)),
        (billing, 21, "customer.subscription.updated", subscription_object("past_due", start)),
        (connect, 25, "account.updated", account_object(False)),
        (billing, 30, "customer.subscription.updated", subscription_object("active", start + 30 * 86400)),
        (connect, 35, "account.updated", account_object(True)),
        (billing, 40, "invoice.payment_failed", invoice_object(3, "open", 1)),
        (billing, 40, "invoice.paid", invoice_object(3, "paid", 2)),
    ]
    return [
        (endpoint, {"id": f"evt_drills_{tag}_{number:02d}", "object": "event", "api_version": "2024-06-20",
                    "type": kind, "created": start + offset, "livemode": False, "pending_webhooks": 1,
                    "data": {"object": obj}, **({"account": account} if endpoint == connect else {})})
        for number, (endpoint, offset, kind, obj) in enumerate(timeline)
    ]


def deliver(port: int, endpoint: str, event: dict) -> tuple[int, str]:
    import stripe

    payload = json.dumps(event)
    secret = CONNECT_WEBHOOK_SECRET if "connect" in endpoint else WEBHOOK_SECRET
    signature = stripe.WebhookSignature.generate_signature_header(payload, secret)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", endpoint, body=payload.encode(),
                           headers={"Content-Type": "application/json", "Stripe-Signature": signature})
        response = connection.getresponse()
        raw = response.read()
    except (http.client.HTTPException, OSError) as error:
        return 0, type(error).__name__
    finally:
        connection.close()
    try:
        body = json.loads(raw)
    except ValueError:
        return response.status, " ".join(raw[:200].decode("utf-8", "replace").split())[:120]
    return response.status, str(body.get("result")) if response.status == 200 else json.dumps(body)[:160]


def twin_state(twin: dict) -> dict:
    from django.db import connections

    from ledger.models import Entry
    from marketplace.models import Contributor, StripeEvent, Subscription

    connections.close_all()
    subscription = Subscription.objects.get(pk=twin["subscription"])
    changes = [json.loads(bytes(e.payload)) for e in Entry.objects.filter(kind="subscription.changed")]
    changes = [c for c in changes if c.get("organization") == f"organization:{twin['organization']}"]
    return {
        "subscription_status": subscription.status,
        "status_event_created": subscription.status_event_created,
        "period_event_created": subscription.period_event_created,
        "current_period_start": subscription.current_period_start.isoformat() if subscription.current_period_start else None,
        "current_period_end": subscription.current_period_end.isoformat() if subscription.current_period_end else None,
        "payouts_enabled": Contributor.objects.get(pk=twin["contributor"]).payouts_enabled,
        "ledger_changes_by_event": _counted(c.get("stripe_event") for c in changes),
        "stripe_event_rows": StripeEvent.objects.filter(event_id__contains=f"_{twin['tag']}_").count(),
    }


def _counted(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def drill_webhooks(stack: Stack, args) -> dict:
    twins = {name: {**twin, "tag": name} for name, twin in stack.world["twins"].items()}
    start = int(time.time()) - 3600
    reference_events = webhook_events(twins["reference"], "reference", start)
    storm_events = webhook_events(twins["storm"], "storm", start)

    reference_answers = [deliver(stack.port, endpoint, event) for endpoint, event in reference_events]

    deliveries = [(endpoint, event) for endpoint, event in storm_events for _ in range(args.webhook_copies)]
    random.Random(args.seed).shuffle(deliveries)
    answers: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    cursor = iter(deliveries)

    def sender() -> None:
        while True:
            with lock:
                item = next(cursor, None)
            if item is None:
                return
            status, result = deliver(stack.port, *item)
            with lock:
                answers.append((item[1]["id"], status, result))

    started = time.monotonic()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(args.webhook_senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    wall = time.monotonic() - started

    reference, storm = twin_state(twins["reference"]), twin_state(twins["storm"])
    statuses = _counted(str(status) for _, status, _ in answers)
    results = _counted(result for _, status, result in answers if status == 200)
    handled = _counted(event_id for event_id, status, result in answers if status == 200 and result != "duplicate")
    event_ids = [event["id"] for _, event in storm_events]
    not_once = {event_id: handled.get(event_id, 0) for event_id in event_ids if handled.get(event_id, 0) != 1}
    doubled = {k: v for k, v in storm["ledger_changes_by_event"].items() if v > 1}
    compared = ("subscription_status", "current_period_start", "current_period_end", "payouts_enabled")
    differences = {k: {"in order": reference[k], "storm": storm[k]} for k in compared if reference[k] != storm[k]}
    reference_ok = all(status == 200 for status, _ in reference_answers)
    checks = [
        check("in-order deliveries answered 200", reference_ok,
              json.dumps(_counted(f"{status} {result}" for status, result in reference_answers))),
        check("every storm delivery answered 200", statuses.get("200", 0) == len(deliveries),
              json.dumps(statuses)),
        check("each event applied once", not not_once,
              f"events not handled exactly once: {not_once}" if not_once else f"{len(event_ids)} events, once each"),
        check("one StripeEvent row per event", storm["stripe_event_rows"] == len(event_ids),
              f"{storm['stripe_event_rows']} rows for {len(event_ids)} events"),
        check("no ledger entry twice for one event", not doubled, json.dumps(doubled) if doubled else "none"),
        check("end state equals in-order delivery", not differences,
              json.dumps(differences) if differences else json.dumps({k: storm[k] for k in compared})),
    ]
    return {"events": len(event_ids), "copies_each": args.webhook_copies, "deliveries": len(deliveries),
            "senders": args.webhook_senders, "wall_s": round(wall, 1), "statuses": statuses, "results": results,
            "reference_state": reference, "storm_state": storm, "checks": checks}


# ---------------------------------------------------------------------------------------------------------------
# Drill 4: schemathesis


SCHEMATHESIS_CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"


def drill_schemathesis(stack: Stack, args) -> dict:
    """Two runs sharing the time budget: /v1 with the API key, /api with the organization owner's DRF token."""
    runs = {}
    budget = args.schemathesis_seconds
    for name, pattern, header, share in (  # /v1 first: /api's fuzzing may revoke the API key
        ("/v1", "^/v1/", f"Authorization: Bearer {stack.key}", 0.4),
        ("/api", "^/api/", f"Authorization: Token {stack.user_token}", 0.6),
    ):
        seconds = max(5, int(budget * share))
        runs[name] = run_schemathesis(stack, pattern=pattern, header=header, seconds=seconds,
                                      phases=args.schemathesis_phases, seed=args.seed)
        if runs[name]["operations_tested"] == 0:  # a machine too busy to finish one scenario in the budget
            runs[name] = run_schemathesis(stack, pattern=pattern, header=header, seconds=2 * seconds,
                                          phases=args.schemathesis_phases, seed=args.seed)
            runs[name]["retried_after_testing_nothing_in_s"] = seconds
    server_errors = sum(r["failures"].get("not_a_server_error", 0) for r in runs.values())
    responses_5xx = sum(r["responses_5xx"] for r in runs.values())
    violations = sum(r["failures"].get("response_schema_conformance", 0) for r in runs.values())
    undeclared = sum(r["failures"].get("status_code_conformance", 0) for r in runs.values())
    ran = all(r["operations_tested"] > 0 for r in runs.values())
    checks = [
        check("schemathesis ran on /api and /v1", ran,
              ", ".join(f"{n}: {r['operations_tested']} operations, {r['test_cases']} cases, exit {r['exit_code']}"
                        for n, r in runs.items())),
        check("0 × 5xx", server_errors == 0 and responses_5xx == 0,
              f"{responses_5xx} responses 5xx, on {server_errors} operations"),
        check("0 schema violations", violations == 0, f"{violations} operations with a response off its schema"),
    ]
    return {"seconds": budget, "runs": runs, "undeclared_status_codes": undeclared, "checks": checks}


def run_schemathesis(stack: Stack, *, pattern: str, header: str, seconds: int, phases: str, seed: int) -> dict:
    report_dir = stack.workdir / f"schemathesis-{uuid.uuid4().hex[:8]}"
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{stack.base_url}/api/schema/",
        "--url", stack.base_url, "--include-path-regex", pattern, "-H", header,
        "--checks", SCHEMATHESIS_CHECKS, "--max-time", str(seconds), "--phases", phases, "--seed", str(seed), "--workers", "2",
        "--request-timeout", str(stack.deadline_s + RESPONSE_MARGIN_S), "--no-shrink", "--suppress-health-check",
        "all", "--report", "ndjson", "--report-dir", str(report_dir), "--warnings", "off",
    ]
    started = time.monotonic()
    try:
        completed = subprocess.run(command, cwd=stack.workdir, env=stack.env, capture_output=True, text=True,
                                   timeout=seconds + 120, start_new_session=True)
        exit_code, output = completed.returncode, completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as timeout:
        exit_code, output = "timeout", str(timeout.stdout or "")
    result = read_schemathesis_events(report_dir)
    result.update(exit_code=exit_code, wall_s=round(time.monotonic() - started, 1), seconds=seconds)
    result["summary"] = output[output.rfind("SUMMARY"):][-1500:] if "SUMMARY" in output else output[-1500:]
    return result


def read_schemathesis_events(report_dir: Path) -> dict:
    """Counts from schemathesis' ndjson event stream: operations tested, test cases, responses with a 5xx status,
    and for each check the operations it failed on, with a few samples."""
    failures: dict[str, set] = {}
    samples: list[str] = []
    operations: set[str] = set()
    cases = server_errors = 0
    for path in sorted(report_dir.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            try:
                finished = json.loads(line).get("ScenarioFinished")
            except (ValueError, AttributeError):
                continue
            if not isinstance(finished, dict):
                continue
            recorder = finished.get("recorder") or {}
            label = recorder.get("label", "?")
            if recorder.get("cases"):
                operations.add(label)
                cases += len(recorder["cases"])
            for interaction in (recorder.get("interactions") or {}).values():
                if ((interaction or {}).get("response") or {}).get("status_code", 0) >= 500:
                    server_errors += 1
            for check_list in (recorder.get("checks") or {}).values():
                for item in check_list:
                    if str(item.get("status", "")).lower() != "failure":
                        continue
                    failures.setdefault(item["name"], set()).add(label)
                    failure = (item.get("failure_info") or {}).get("failure") or {}
                    sample = f"{item['name']} on {label}: {failure.get('title', '')}: {failure.get('message', '')}"
                    sample = " ".join(sample.split())[:240]
                    if len(samples) < 12 and item["name"] != "status_code_conformance" and sample not in samples:
                        samples.append(sample)
    return {"operations_tested": len(operations), "test_cases": cases, "responses_5xx": server_errors,
            "failures": {name: len(labels) for name, labels in sorted(failures.items())},
            "failing_operations": {name: sorted(labels) for name, labels in sorted(failures.items())},
            "samples": samples}


# ---------------------------------------------------------------------------------------------------------------
# Drill 5: hostile inputs that schemathesis does not generate (the inputs of issue 11's findings 2 and 3)


def hostile_inputs(key: str) -> list[tuple[str, str, bytes, dict]]:
    """(what, path, body, headers): each one a client mistake or an attack, each to be refused with a 4xx."""
    import stripe

    bearer = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    plain = {"Content-Type": "application/json"}

    def completion(**fields) -> bytes:
        return json.dumps({**COMPLETION, **fields}).encode()

    def signed(event: dict) -> dict:
        return {**plain, "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            json.dumps(event), WEBHOOK_SECRET)}

    nested = b"[" * 5000 + b"]" * 5000
    no_data = {"id": "evt_drills_hostile_1", "object": "event", "type": "invoice.paid", "created": 1}
    bad_created = {"id": "evt_drills_hostile_2", "object": "event", "type": "invoice.paid", "created": "abc",
                   "data": {"object": {"object": "invoice", "subscription": "sub_x"}}}
    return [
        ("deeply nested JSON, unauthenticated", "/api/auth/token", b'{"username": ' + nested + b"}", plain),
        ("deeply nested JSON on /v1/completions", "/v1/completions", b'{"model": ' + nested + b"}", bearer),
        ("a body over 2 MB", "/v1/completions", completion(prompt="a" * (3 * 1024 * 1024)), bearer),
        ("top_p = 0", "/v1/completions", completion(top_p=0), bearer),
        ("seed beyond 64 bits", "/v1/completions", completion(seed=2**70), bearer),
        ("a lone surrogate in chat content", "/v1/chat/completions",
         b'{"model": "%s", "max_tokens": 4, "messages": [{"role": "user", "content": "a\\ud800b"}]}'
         % SYSTEM_SLUG.encode(), bearer),
        ("a prompt beyond the base model's context", "/v1/completions", completion(prompt="a" * 100_000), bearer),
        ("a signed webhook without data", "/api/stripe/webhook", json.dumps(no_data).encode(), signed(no_data)),
        ("a signed webhook with created 'abc'", "/api/stripe/webhook", json.dumps(bad_created).encode(),
         signed(bad_created)),
    ]


def drill_hostile(stack: Stack, args) -> dict:
    answers = []
    for what, path, body, headers in hostile_inputs(stack.key):
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=stack.deadline_s + RESPONSE_MARGIN_S)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            status, content_type = response.status, response.getheader("Content-Type", "")
        except (http.client.HTTPException, OSError) as error:
            status, content_type, raw = 0, "", type(error).__name__.encode()
        finally:
            connection.close()
        answers.append({"input": what, "path": path, "status": status, "json": content_type.startswith("application/json"),
                        "seconds": round(time.monotonic() - started, 2),
                        "body": " ".join(raw[:200].decode("utf-8", "replace").split())[:160]})
    refused = [a for a in answers if 400 <= a["status"] < 500 and a["json"]]
    server_errors = [a for a in answers if a["status"] >= 500 or a["status"] == 0]
    checks = [
        check("0 × 5xx", not server_errors, ", ".join(f"{a['input']}: {a['status']}" for a in server_errors) or "none"),
        check("every one refused with a 4xx in the error shape", len(refused) == len(answers),
              ", ".join(f"{a['input']}: {a['status']}{'' if a['json'] else ' (not JSON)'}"
                        for a in answers if a not in refused) or f"{len(answers)} of {len(answers)}"),
    ]
    return {"answers": answers, "checks": checks}


# ---------------------------------------------------------------------------------------------------------------
# Report


def render(results: dict) -> str:
    setup = results["setup"]
    lines = [
        "# Drills (`python -m bench.drills" + (" --quick" if setup["quick"] else "") + "`)",
        "",
        f"Commit {setup['commit']}, {setup['date']}. PostgreSQL {setup['postgres']}, Redis broker, gunicorn "
        f"{setup['gunicorn_workers']} workers × {setup['gunicorn_threads']} threads, one Celery worker (threads "
        f"pool), tiny 2-layer model, inference deadline {setup['deadline_s']} s, loopback only. {setup['cpus']} CPUs "
        f"shared with other work: load average {setup['load_average_start']} at the start, "
        f"{setup['load_average_end']} at the end. Setup: {setup['setup_s'].get('total')} s (database "
        f"{setup['setup_s'].get('database')} s, world {setup['setup_s'].get('world')} s, then gunicorn "
        f"{setup['setup_s'].get('gunicorn')} s and the worker {setup['setup_s'].get('worker')} s side by side).",
        "",
    ]
    for name in DRILLS:
        if name in results["drills"]:
            lines += render_drill(name, results["drills"][name]) + [""]
    failed = [f"{d}: {c['name']}" for d, r in results["drills"].items() for c in r.get("checks", []) if not c["ok"]]
    lines.append("**All invariants hold.**" if not failed else f"**{len(failed)} invariants fail:** " + "; ".join(failed))
    return "\n".join(lines) + "\n"


def render_drill(name: str, result: dict) -> list[str]:
    titles = {"load": "1. Load", "kill": "2. kill -9 of the worker mid-load", "webhooks": "3. Webhook replay storm",
              "schemathesis": "4. schemathesis", "hostile": "5. Hostile inputs"}
    lines = [f"## {titles[name]}" + (f" ({result['drill_s']} s)" if "drill_s" in result else ""), ""]
    if "error" in result:
        return lines + [f"The drill itself failed: `{result['error']}`"]
    if name in ("load", "kill"):
        if name == "kill":
            what = (f"{result['clients']} clients (every fourth streams chat, max_tokens {KILL_MAX_TOKENS}); the worker "
                    f"got kill -9 at {result.get('killed_at_s')} s holding {result.get('in_flight_at_kill')} tasks, was restarted (ready in {result.get('worker_restart_s')} s, "
                    f"at {result.get('back_at_s')} s) and the load went on for {result['seconds'] * 0.5:g} s more; "
                    f"inference deadline {result['deadline_s']} s.")
        else:
            what = f"{result['clients']} clients for {result['seconds']} s (every fourth streams chat)."
        lines += [
            what,
            "",
            "| requests | answers by status | served | served/s | p50 ms | p99 ms | slowest ms |",
            "|---|---|---|---|---|---|---|",
            f"| {result['requests']} | {', '.join(f'{k}: {v}' for k, v in result['statuses'].items())} | "
            f"{result['served']} | {result['served_per_s']} | {result['p50_ms']} | {result['p99_ms']} | "
            f"{result['max_ms']} |",
        ]
        if name == "kill":
            lines += ["", f"Left in the broker when the clients were done (not judged): "
                          f"{result['broker_after']['unacked']} unacknowledged, {result['broker_after']['queued']} queued."]
        if result.get("failure_samples"):
            lines += ["", "Failures seen (count: body):"]
            lines += [f"- {count}: `{text}`" for text, count in result["failure_samples"].items()]
    elif name == "webhooks":
        lines += [
            f"{result['events']} signed events, each sent {result['copies_each']} times ({result['deliveries']} "
            f"deliveries) by {result['senders']} concurrent senders, shuffled, in {result['wall_s']} s; answers "
            f"{json.dumps(result['statuses'])}, results {json.dumps(result['results'])}.",
        ]
    elif name == "hostile":
        lines += ["| input | endpoint | status | JSON | seconds | answer |", "|---|---|---|---|---|---|"]
        lines += [f"| {a['input']} | {a['path']} | {a['status']} | {'yes' if a['json'] else 'no'} | {a['seconds']} | "
                  f"`{a['body'].replace('|', '/').replace('`', '')}` |" for a in result["answers"]]
    else:
        lines += [
            "| run | operations | test cases | exit | seconds | server errors | schema violations | undeclared status codes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run_name, run in result["runs"].items():
            f = run["failures"]
            lines.append(f"| {run_name} | {run['operations_tested']} | {run['test_cases']} | {run['exit_code']} | "
                         f"{run['wall_s']} | {f.get('not_a_server_error', 0)} | "
                         f"{f.get('response_schema_conformance', 0)} | {f.get('status_code_conformance', 0)} |")
        samples = [s for run in result["runs"].values() for s in run["samples"]]
        if samples:
            lines += ["", "Samples:"] + [f"- `{s}`" for s in samples[:10]]
    lines += ["", "| invariant | holds | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'yes' if c['ok'] else '**NO**'} | {c['detail'].replace('|', '/')} |"
              for c in result["checks"]]
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short bounds: 10 s of load, 20 s of schemathesis")
    parser.add_argument("--drills", default=",".join(DRILLS), help=f"comma-separated, from {','.join(DRILLS)}")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, help="load duration (default 60, --quick 10)")
    parser.add_argument("--kill-seconds", type=float, help="kill drill: a quarter of it before the kill, half of it after the restart (default 40, --quick 12)")
    parser.add_argument("--deadline", type=int, help="INFERENCE_DEADLINE_SECONDS for the stack (default 30, --quick 15)")
    parser.add_argument("--schemathesis-seconds", type=int, help="default 120, --quick 20")
    parser.add_argument("--schemathesis-phases", help="default all four; --quick: fuzzing (the coverage phase "
                        "alone outlasts 20 s on 46 operations)")
    parser.add_argument("--webhook-copies", type=int, help="deliveries of each event (default 12, --quick 5)")
    parser.add_argument("--webhook-senders", type=int, default=16)
    parser.add_argument("--max-requests-per-client", type=int, default=2000)
    parser.add_argument("--worker-app", default="mosaic", help="the Celery app the worker runs (celery -A)")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="mosaic_drills", help="PostgreSQL database to create and drop")
    parser.add_argument("--redis-url", default=os.environ.get("MOSAIC_DRILLS_REDIS_URL", "redis://127.0.0.1:6379/8"))
    parser.add_argument("--results", default=str(RESULTS / "drills"),
                        help="write <this>.md and <this>.json (default bench/results/drills)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"seconds": (60, 10), "kill_seconds": (40, 12), "deadline": (30, 15),
                "schemathesis_seconds": (120, 20), "webhook_copies": (12, 5),
                "schemathesis_phases": ("examples,coverage,fuzzing,stateful", "fuzzing")}
    for name, (full, short) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    args.drills = [d.strip() for d in args.drills.split(",") if d.strip()]
    unknown = [d for d in args.drills if d not in DRILLS]
    if unknown:
        parser.error(f"unknown drills: {', '.join(unknown)} (choose from {', '.join(DRILLS)})")
    return args


def postgres_server() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = "postgres://postgres@127.0.0.1:5432/mosaic"
    return url.split("?", 1)[0].rsplit("/", 1)[0]


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and a kill from outside tear down alike (SIGINT set explicitly: a shell starts background jobs with
    # it ignored, and Python then never raises KeyboardInterrupt).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    load_start, commit = load_average(), git_commit()  # the code that runs is the code at the start
    stack = Stack(postgres_server=postgres_server(), database=args.database, redis_url=args.redis_url,
                  deadline_s=args.deadline, gunicorn_workers=args.gunicorn_workers,
                  gunicorn_threads=args.gunicorn_threads, worker_app=args.worker_app)
    results: dict = {"drills": {}}
    try:
        try:
            print(f"drills: setting up in {stack.workdir} (database {args.database}, broker {args.redis_url})",
                  flush=True)
            stack.open()
        except Exception as error:
            print(f"drills: the stack could not be set up: {type(error).__name__}: {error}", file=sys.stderr)
            for log in sorted(stack.workdir.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            return 2
        runners = {"load": drill_load, "kill": drill_kill, "webhooks": drill_webhooks,
                   "schemathesis": drill_schemathesis, "hostile": drill_hostile}
        for name in args.drills:
            print(f"drills: {name} ...", flush=True)
            started = time.monotonic()
            try:
                result = runners[name](stack, args)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001 - one drill failing must not skip the others or the cleanup
                result = {"error": f"{type(error).__name__}: {error}",
                          "checks": [check("the drill ran", False, f"{type(error).__name__}: {error}")]}
            result["drill_s"] = round(time.monotonic() - started, 1)
            results["drills"][name] = result
            print("\n".join(render_drill(name, result)) + "\n", flush=True)
        from django.db import connection

        postgres = connection.cursor().connection.info.server_version
    except KeyboardInterrupt:
        print("drills: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup half-way
        stack.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    results["setup"] = {
        "quick": args.quick, "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "postgres": f"{postgres // 10000}.{postgres % 10000}", "gunicorn_workers": args.gunicorn_workers,
        "gunicorn_threads": args.gunicorn_threads, "deadline_s": args.deadline, "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_average_start": load_start, "load_average_end": load_average(),
        "setup_s": stack.setup_s, "arguments": {k: v for k, v in vars(args).items() if k != "results"},
    }
    failed = [c for r in results["drills"].values() for c in r.get("checks", []) if not c["ok"]]
    results["all_invariants_hold"] = not failed
    target = Path(args.results)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = render(results)
    target.with_suffix(".md").write_text(report)
    print(report)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
