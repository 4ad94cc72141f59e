"""API benchmark: `python -m bench.api_bench [--clients 50] [--seconds 10] [--workers 2]`.

Builds a tiny world in a temporary directory (a 2-layer, 64-wide Llama with a character tokenizer and two
LoRA experts; no download), seeds a fresh SQLite database (or DATABASE_URL's PostgreSQL when --postgres) with
an organization, a plan with limits out of the way, a key and a two-expert logit-mixture system, starts gunicorn
on a free loopback port, and drives it with N concurrent client threads (bounded in count and time):

- GET /v1/models;
- POST /v1/completions on the tiny system (max_tokens 4), under the same concurrency;
- the same completion from one client at a time, where total latency minus the engine time the server reports
  (x-mosaic-engine-ms) is Mosaic's own overhead, free of queueing.
Also reports the server's own view: Usage.latency_ms - Usage.engine_ms over every completion served.
Writes bench/results/api.json and .md (api_postgres.json and .md with --postgres).
"""
import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BENCH_DB = "mosaic_api_bench"


def _postgres_admin(server_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server_url + "/postgres", autocommit=True) as connection:
        connection.execute(sql)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def build_world(root: Path) -> tuple[Path, dict[str, Path]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from composition.world import build_base_model

    base = Path(build_base_model(root / "base", layers=2, hidden=64, seed=0, train_steps=0))
    adapters = {}
    for seed, name in enumerate(["alpha", "beta"], start=1):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"))
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.normal_(0, 0.02)
        model.save_pretrained(str(root / name), safe_serialization=True)
        adapters[name] = root / name
    return base, adapters


def seed(base: Path, adapters: dict[str, Path]) -> str:
    """Rows through the same services the API uses. Returns the API key."""
    import hashlib

    from django.contrib.auth import get_user_model

    from marketplace.models import (
        BaseModel, Contributor, Expert, ExpertVersion, LicenseTerms, Plan, Subscription,
    )
    from marketplace.services.organizations import api_key_create, organization_create
    from marketplace.services.systems import system_create

    User = get_user_model()
    owner = User.objects.create_user(username="bench-owner", password=None)
    base_model = BaseModel.objects.create(name="bench-tiny", local_path=str(base), architecture="LlamaForCausalLM",
                                          hidden_size=64, num_layers=2, vocab_size=100, content_hash="0" * 64)
    expert_ids = []
    for name, path in adapters.items():
        contributor = Contributor.objects.create(user=User.objects.create_user(username=name, password=None),
                                                 display_name=name.title())
        expert = Expert.objects.create(owner=contributor, slug=name, name=name, base_model=base_model)
        sha256 = hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()
        expert.current_version = ExpertVersion.objects.create(
            expert=expert, number=1, sha256=sha256, storage_path=str(path), status=ExpertVersion.Status.VALID)
        expert.license = LicenseTerms.objects.create(expert=expert, spdx_id="Apache-2.0")
        expert.save()
        expert_ids.append(expert.pk)
    organization = organization_create(name="bench-co", owner=owner, domains=[])
    plan = Plan.objects.create(slug="bench", name="Bench", price_per_1k_tokens_minor=50,
                               requests_per_minute=10_000_000, tokens_per_minute=1_000_000_000,
                               monthly_token_quota=10**15)
    Subscription.objects.create(organization=organization, plan=plan, status=Subscription.Status.ACTIVE)
    system_create(slug="tiny-mix", name="Tiny mix", base_model=base_model, strategy="logit_mixture",
                  strategy_config={}, expert_ids=expert_ids, actor="bench")
    return api_key_create(organization=organization, name="bench")[1]


class Client:
    """One keep-alive HTTP/1.1 connection on loopback."""

    def __init__(self, port: int, key: str):
        self.port, self.headers = port, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, float, dict]:
        data = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=data, headers=self.headers)
            response = self.connection.getresponse()
            response.read()
        except (http.client.HTTPException, OSError):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, (time.perf_counter() - started) * 1000, {}
        elapsed = (time.perf_counter() - started) * 1000
        if response.getheader("Connection", "").lower() == "close":
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return response.status, elapsed, {k.lower(): v for k, v in response.getheaders()}


def drive(*, port: int, key: str, clients: int, seconds: float, method: str, path: str, body: dict | None,
          max_requests_per_client: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    overheads: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def run():
        client = Client(port, key)
        for _ in range(max_requests_per_client):
            if time.perf_counter() > deadline:
                break
            status, elapsed, headers = client.request(method, path, body)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed)
                    if "x-mosaic-engine-ms" in headers:
                        overheads.append(elapsed - int(headers["x-mosaic-engine-ms"]))

    started = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    result = {
        "clients": clients, "requests_ok": len(latencies), "statuses": {str(k): v for k, v in statuses.items()},
        "wall_s": round(wall, 2), "req_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
    }
    if overheads:
        result.update(overhead_p50_ms=round(percentile(overheads, 50), 1),
                      overhead_p99_ms=round(percentile(overheads, 99), 1))
    return result


def wait_for(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("gunicorn exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start")


LEDGER_PATHS = {
    "inline": "before: each request's events sequenced in its own transaction, under the one ledger lock held to "
              "its commit (LEDGER_SEQUENCING=inline, the previous path's serialisation)",
    "after_commit": "after, embedded default: queued; each request integrates the queue after its commit unless "
                    "another one is at it (LEDGER_SEQUENCING=after_commit)",
    "background": "after, with a sequencer process: queued; `ledger sequence --follow` integrates "
                  "(LEDGER_SEQUENCING=background)",
}


def completions_by_ledger_path(*, database_url: str, clients: int, seconds: float, workers: int,
                               paths=tuple(LEDGER_PATHS)) -> dict:
    """POST /v1/completions on the tiny world, `clients` at once, served by gunicorn on a fresh PostgreSQL
    database (`database_url`, created afresh and dropped), once per ledger write path, one after another on
    the same world: requests/s and latency."""
    server_url, database = database_url.rsplit("/", 1)
    _postgres_admin(server_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    _postgres_admin(server_url, f"CREATE DATABASE {database}")
    workdir = Path(tempfile.mkdtemp(prefix="mosaic-api-ledger-bench-"))
    env = {**os.environ, "MOSAIC_VAR_DIR": str(workdir / "var"), "OMP_NUM_THREADS": "1", "DEBUG": "0",
           "LOG_LEVEL": "ERROR", "DATABASE_URL": f"{database_url}?conn_max_age=600"}
    setup = subprocess.run(  # its own process: the caller may be set up on another database
        [sys.executable, "-c", "import sys, django; django.setup(); from django.core.management import call_command; "
         "call_command('migrate', verbosity=0); from pathlib import Path; from bench.api_bench import build_world, seed; "
         "print(seed(*build_world(Path(sys.argv[1]))))", str(workdir / "world")],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "mosaic.settings"}, capture_output=True, text=True, check=True,
    )
    key = setup.stdout.strip().splitlines()[-1]
    completion = {"model": "tiny-mix", "prompt": "hello", "max_tokens": 4, "temperature": 0, "seed": 1}
    results = {}
    try:
        for path in paths:
            run_env = {**env, "LEDGER_SEQUENCING": path, "DJANGO_SETTINGS_MODULE": "mosaic.settings"}
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "mosaic.wsgi:application", "--bind", f"127.0.0.1:{port}",
                 "--workers", str(workers), "--backlog", "256", "--timeout", "120", "--log-level", "warning"],
                cwd=ROOT, env=run_env,
            )
            sequencer = subprocess.Popen(
                [sys.executable, "manage.py", "ledger", "sequence", "--follow"], cwd=ROOT, env=run_env,
                stdout=subprocess.DEVNULL,
            ) if path == "background" else None
            try:
                wait_for(port, server)
                drive(port=port, key=key, clients=workers * 2, seconds=30, method="POST", path="/v1/completions",
                      body=completion, max_requests_per_client=3)  # warm: each worker loads the model
                load_before = round(os.getloadavg()[0], 2)
                results[path] = drive(port=port, key=key, clients=clients, seconds=seconds, method="POST",
                                      path="/v1/completions", body=completion, max_requests_per_client=100_000)
                results[path]["load_average_before"] = load_before
            finally:
                server.terminate()
                server.wait(timeout=60)
                if sequencer:
                    sequencer.terminate()  # drains the queue, signs, leaves
                    sequencer.wait(timeout=120)
    finally:
        _postgres_admin(server_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequential", type=int, default=100, help="one-at-a-time completions for the overhead")
    parser.add_argument("--postgres", action="store_true",
                        help=f"use a fresh database {BENCH_DB} on DATABASE_URL's PostgreSQL server instead of SQLite")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mosaic-api-bench-"))
    env = {**os.environ, "MOSAIC_VAR_DIR": str(workdir / "var"), "OMP_NUM_THREADS": "1", "DEBUG": "0",
           "DJANGO_SETTINGS_MODULE": "mosaic.settings", "LOG_LEVEL": "ERROR"}
    if args.postgres:
        server_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mosaic").rsplit("/", 1)[0]
        _postgres_admin(server_url, f"DROP DATABASE IF EXISTS {BENCH_DB}")
        _postgres_admin(server_url, f"CREATE DATABASE {BENCH_DB}")
        env["DATABASE_URL"] = f"{server_url}/{BENCH_DB}?conn_max_age=600"
    else:
        # Deployment settings for SQLite: persistent connections; WAL (set on the file below) with
        # synchronous=NORMAL, so a commit appends to the WAL without an fsync (durable across process crashes).
        env["DATABASE_URL"] = (f"sqlite:///{workdir / 'bench.sqlite3'}?conn_max_age=600"
                               "&init_command=PRAGMA+synchronous%3DNORMAL")
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if not args.postgres:
        from django.db import connection

        with connection.cursor() as cursor:  # persistent on the file: gunicorn's connections use it too
            cursor.execute("PRAGMA journal_mode=WAL")
    base, adapters = build_world(workdir / "world")
    key = seed(base, adapters)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mosaic.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads), "--backlog", "256", "--timeout", "120",
         "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    try:
        wait_for(port, server)
        completion = {"model": "tiny-mix", "prompt": "hello", "max_tokens": 4, "temperature": 0, "seed": 1}
        # Warm every worker: the first completion in a process loads the base model and the adapters.
        drive(port=port, key=key, clients=args.workers * args.threads * 2, seconds=30, method="POST",
              path="/v1/completions", body=completion, max_requests_per_client=3)
        results = {
            "models": drive(port=port, key=key, clients=args.clients, seconds=args.seconds, method="GET",
                            path="/v1/models", body=None, max_requests_per_client=10_000),
            "models_sequential": drive(port=port, key=key, clients=1, seconds=args.seconds, method="GET",
                                       path="/v1/models", body=None, max_requests_per_client=2_000),
            "completions": drive(port=port, key=key, clients=args.clients, seconds=args.seconds, method="POST",
                                 path="/v1/completions", body=completion, max_requests_per_client=10_000),
            "completion_sequential": drive(port=port, key=key, clients=1, seconds=args.seconds * 3, method="POST",
                                           path="/v1/completions", body=completion,
                                           max_requests_per_client=args.sequential),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)

    from marketplace.models import Usage

    server_overheads = [u.latency_ms - u.engine_ms for u in Usage.objects.only("latency_ms", "engine_ms")]
    engine = [u.engine_ms for u in Usage.objects.only("engine_ms")]
    results["server_view"] = {
        "completions_recorded": len(server_overheads),
        "overhead_p50_ms": percentile(server_overheads, 50), "overhead_p99_ms": percentile(server_overheads, 99),
        "engine_p50_ms": percentile(engine, 50),
    }
    if args.postgres:
        from django.db import connections

        connections.close_all()
        _postgres_admin(server_url, f"DROP DATABASE IF EXISTS {BENCH_DB}")
    results["setup"] = {
        "database": ("postgresql, persistent connections" if args.postgres
                     else "sqlite, WAL + synchronous=NORMAL, persistent connections"), "gunicorn_workers": args.workers,
        "gunicorn_threads": args.threads, "cpus": os.cpu_count(), "python": platform.python_version(),
        "machine": platform.machine(), "load_average_1m_at_end": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "goals": {"non_inference_p99_ms": 50, "overhead_p50_ms": 10},
    }
    RESULTS.mkdir(exist_ok=True)
    name = "api_postgres" if args.postgres else "api"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


def render(results: dict) -> str:
    setup = results["setup"]
    lines = [
        "# API benchmark (`python -m bench.api_bench`)",
        "",
        f"gunicorn {setup['gunicorn_workers']} workers × {setup['gunicorn_threads']} threads, {setup['database']}, "
        f"{setup['cpus']} CPUs shared with other work (load average {setup['load_average_1m_at_end']} at the end), loopback, tiny 2-layer model (Celery eager in the web process), {setup['date']}.",
        "",
        "| endpoint | clients | ok | req/s | p50 ms | p99 ms | overhead p50 ms | overhead p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"models": "GET /v1/models", "models_sequential": "GET /v1/models, one client", "completions": "POST /v1/completions (max_tokens 4)",
             "completion_sequential": "POST /v1/completions, one client"}
    for key, label in names.items():
        r = results[key]
        lines.append(f"| {label} | {r['clients']} | {r['requests_ok']} | {r['req_per_s']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r.get('overhead_p50_ms', '')} | {r.get('overhead_p99_ms', '')} |")
    view = results["server_view"]
    lines += [
        "",
        f"Server's own view over {view['completions_recorded']} completions (Usage.latency_ms − engine_ms, whole "
        f"milliseconds): overhead p50 {view['overhead_p50_ms']} ms, p99 {view['overhead_p99_ms']} ms; engine p50 "
        f"{view['engine_p50_ms']} ms.",
        "",
        "Goals: p99 ≤ 50 ms for non-inference endpoints; overhead p50 ≤ 10 ms. Client-side overhead = total "
        "latency − the engine time the server reports (x-mosaic-engine-ms); under 50 clients it includes queueing "
        "for a worker, so the one-client row is the overhead proper. With 50 clients in a closed loop the latency "
        "is bounded below by clients / throughput (Little's law): p99 ≤ 50 ms at 50 clients needs ≥ 1,000 req/s, "
        "and the 50 client threads share the same 2 cores as gunicorn.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
