"""Serving benchmark (issue 12): the real HTTP stack, continuous batching against the window batching it replaced.

    python -m bench.serving                       # SmolLM2-135M-Instruct, 16 clients, ~1 min per contender
    python -m bench.serving --smoke               # a tiny random Llama, 4 clients, a few seconds each
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> python -m bench.serving --redis-url redis://127.0.0.1:6379/<n>

One run starts gunicorn (the web process, mosaic.wsgi) on a fresh database (SQLite in a scratch folder, or the
PostgreSQL database of DATABASE_URL, dropped and created again), a Redis broker database (flushed), and for each
contender in turn one worker process on the base model's queue:
  - window: `celery -A bench.window_worker` (bench.window_batcher: calls gathered for 5 ms, then run to their end);
  - continuous: `celery -A gpu_workers.app` (gpu_workers.batching: requests join and leave at every step).
Both with the threads pool (-c 64), the same torch threads (--threads) and the same experts: one LoRA r=8 on
every projection per client (random, of the model's shapes), each served as a system of its own ("single").

N clients stream chat completions (stream=true, greedy, end tokens forbidden through logit_bias so that every
answer has exactly its max_tokens), each asking its own expert, in a closed loop for --duration seconds: a client
sends its next request when its previous answer ended, until --duration seconds have passed and client 0's
first answer has ended (so short requests keep arriving while the long answer decodes). That first request
asks for --long-tokens tokens;
every other request for one of --tokens (in turn); client i starts i * --gap-ms after client 0.

Per contender: tokens/s (completion tokens over the time from the first request to the last answer), time to
first token p50/p99 (from sending the request to the first chunk with text), inter-token latency p99 (between
chunks with text), failed requests (a status other than 200, an error event, no [DONE]), and how many of the
requests sent while client 0's long answer was in progress got their first token before it ended (the goal: every
one sent at least TTFT_GOAL_S before its end). Prints a table; writes bench/results/serving.md and .json (one
contender alone: serving_<contender>.json), with the machine's load average before and after each contender.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from bench.scheduling import percentile

ROOT = Path(__file__).resolve().parents[1]
TTFT_GOAL_S = 1.0
RESULTS = ROOT / "bench" / "results"
QUESTIONS = [
    "Explain how a rainbow forms.", "Write a short poem about the sea.", "What is a prime number?",
    "Describe a busy market in the morning.", "How do bees make honey?", "Give three tips for learning to cook.",
    "Why is the sky blue?", "Tell a story about a lost key.", "What does a compiler do?",
    "Describe the taste of a lemon.", "How does a bicycle stay upright?", "Write a letter to a friend.",
    "What is photosynthesis?", "Describe a thunderstorm.", "How do you make tea?", "What is gravity?",
]

SEED = """
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from bench.serving import seed
spec = json.loads(sys.argv[1])
print(json.dumps(seed(spec["model_dir"], spec["base_name"], spec["experts"])))
"""


def seed(model_dir: str, base_name: str, experts: dict[str, str]) -> dict:
    """The deployment's rows (through the services the API uses): the base model, one contributor, expert and
    "single" system per adapter, an organization on a plan whose limits are out of the way, and its API key.
    Returns {"key": the API key, "systems": {expert name: system slug}}."""
    import hashlib

    from django.contrib.auth import get_user_model

    from marketplace.models import (
        BaseModel, Contributor, Expert, ExpertVersion, LicenseTerms, Plan, Subscription,
    )
    from marketplace.services.organizations import api_key_create, organization_create
    from marketplace.services.systems import system_create

    config = json.loads((Path(model_dir) / "config.json").read_text())
    User = get_user_model()
    owner = User.objects.create_user(username="bench-owner", password=None)
    base_model = BaseModel.objects.create(
        name=base_name, local_path=model_dir, architecture=config["architectures"][0],
        hidden_size=config["hidden_size"], num_layers=config["num_hidden_layers"], vocab_size=config["vocab_size"],
        content_hash="0" * 64, context_length=config.get("max_position_embeddings"))
    systems = {}
    for name, path in experts.items():
        contributor = Contributor.objects.create(user=User.objects.create_user(username=name, password=None),
                                                 display_name=name)
        expert = Expert.objects.create(owner=contributor, slug=name, name=name, base_model=base_model)
        sha256 = hashlib.sha256((Path(path) / "adapter_model.safetensors").read_bytes()).hexdigest()
        expert.current_version = ExpertVersion.objects.create(
            expert=expert, number=1, sha256=sha256, storage_path=path, status=ExpertVersion.Status.VALID)
        expert.license = LicenseTerms.objects.create(expert=expert, spdx_id="Apache-2.0")
        expert.save()
        slug = f"bench-{name.replace('_', '-')}"
        system_create(slug=slug, name=slug, base_model=base_model, strategy="single", strategy_config={},
                      expert_ids=[expert.pk], actor="bench")
        systems[name] = slug
    organization = organization_create(name="bench-co", owner=owner, domains=[])
    plan = Plan.objects.create(slug="bench", name="Bench", price_per_1k_tokens_minor=50,
                               requests_per_minute=10_000_000, tokens_per_minute=1_000_000_000,
                               monthly_token_quota=10**15)
    Subscription.objects.create(organization=organization, plan=plan, status=Subscription.Status.ACTIVE)
    return {"key": api_key_create(organization=organization, name="bench")[1], "systems": systems}


def fresh_database(env: dict, scratch: Path) -> None:
    """SQLite in the scratch folder, or DATABASE_URL's PostgreSQL database dropped and created again."""
    url = env.get("DATABASE_URL")
    if not url or url.startswith("sqlite"):
        env["DATABASE_URL"] = f"sqlite:///{scratch / 'db.sqlite3'}"
        return
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = ["psql", "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 5432),
             "-U", parsed.username or "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
    for statement in (f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'):
        subprocess.run([*admin, "-c", statement], check=True, env={**os.environ, "PGPASSWORD": parsed.password or ""})


def end_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def stream_chat(port: int, key: str, body: dict, timeout: float) -> dict:
    """One streaming chat completion: {sent, chunk_times (chunks with text), end, tokens, error}."""
    record = {"sent": time.perf_counter(), "chunk_times": [], "end": None, "tokens": 0, "error": None}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            record["error"] = f"HTTP {response.status}: {response.read()[:300]!r}"
            return record
        done = False
        while True:
            line = response.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            if "error" in chunk:
                record["error"] = f"error event: {chunk['error']}"
                continue
            if any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", [])):
                record["chunk_times"].append(time.perf_counter())
            if chunk.get("usage"):
                record["tokens"] = chunk["usage"]["completion_tokens"]
        if not done and record["error"] is None:
            record["error"] = "the stream ended without [DONE]"
    except (OSError, http.client.HTTPException, ValueError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
    finally:
        record["end"] = time.perf_counter()
        connection.close()
    return record


def run_clients(port: int, key: str, systems: list[str], args, logit_bias: dict) -> list[list[dict]]:
    """Every client's requests, in order: a closed loop until args.duration seconds have passed and client 0's
    long answer has ended (so that the short requests keep the batch busy for as long as it decodes)."""
    records: list[list[dict]] = [[] for _ in systems]
    start = time.perf_counter()
    long_ended = threading.Event()

    def client(position: int) -> None:
        time.sleep(position * args.gap_ms / 1000)
        number = 0
        while time.perf_counter() - start < args.duration or not long_ended.is_set():
            long = position == 0 and number == 0
            max_tokens = args.long_tokens if long else args.tokens[(position + number) % len(args.tokens)]
            body = {"model": systems[position], "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": QUESTIONS[(position + number) % len(QUESTIONS)]}],
                    "max_tokens": max_tokens, "temperature": 0, "logit_bias": logit_bias}
            record = stream_chat(port, key, body, timeout=args.duration + 600)
            record["max_tokens"] = max_tokens
            records[position].append(record)
            if long:
                long_ended.set()
            number += 1

    threads = [threading.Thread(target=client, args=(position,)) for position in range(len(systems))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def summarise(records: list[list[dict]]) -> dict:
    flat = [record for client in records for record in client]
    start, end = min(r["sent"] for r in flat), max(r["end"] for r in flat)
    tokens = sum(r["tokens"] for r in flat if r["error"] is None)
    ttft = [r["chunk_times"][0] - r["sent"] for r in flat if r["chunk_times"]]
    gaps = [later - earlier for r in flat for earlier, later in zip(r["chunk_times"], r["chunk_times"][1:])]
    long = records[0][0]
    # the requests sent while the long answer was in progress, and those of them that got a first token before it ended
    during = [r for client in records[1:] for r in client if long["sent"] < r["sent"] < long["end"]]
    served_during = [r for r in during if r["chunk_times"] and r["chunk_times"][0] < long["end"]]
    # A request sent in the long answer's last moments cannot have its first token before that answer ends: the
    # goal holds when every one sent at least a TTFT goal before the end had it.
    served_after = [long["end"] - r["sent"] for r in during if r not in served_during]
    return {
        "requests": len(flat),
        "tokens": tokens,
        "wall_s": round(end - start, 2),
        "tokens_per_s": round(tokens / (end - start), 2),
        "ttft_p50_s": round(percentile(ttft, 50), 3),
        "ttft_p99_s": round(percentile(ttft, 99), 3),
        "itl_p99_s": round(percentile(gaps, 99), 3),
        "failed": sum(r["error"] is not None for r in flat),
        "errors": sorted({r["error"] for r in flat if r["error"]})[:5],
        "long_answer_tokens": long["tokens"],
        "long_answer_s": round(long["end"] - long["sent"], 2),
        "arrived_during_long_answer": len(during),
        "first_token_before_long_answer_ends": len(served_during),
        "served_after_the_long_answer_sent_s_before_its_end": [round(ahead, 3) for ahead in sorted(served_after)],
        "late_first_token_before_long_ends": bool(during) and all(ahead < TTFT_GOAL_S for ahead in served_after),
        "per_request": [{"client": position, "sent_s": round(r["sent"] - start, 3),
                         "ttft_s": round(r["chunk_times"][0] - r["sent"], 3) if r["chunk_times"] else None,
                         "end_s": round(r["end"] - start, 3), "max_tokens": r.get("max_tokens"),
                         "tokens": r["tokens"], "error": r["error"]}
                        for position, client in enumerate(records) for r in client],
    }


def start_worker(app_module: str, queue: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app_module, "worker", "-Q", queue, "-P", "threads", "-c", "64",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def warm_up(port: int, key: str, system: str, worker: subprocess.Popen, logit_bias: dict) -> None:
    """Until the worker has loaded the model and answered this system once (both contenders start warm)."""
    deadline = time.monotonic() + 300
    body = {"model": system, "stream": True, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
            "temperature": 0, "logit_bias": logit_bias}
    while True:
        if worker.poll() is not None:
            raise RuntimeError("the worker exited while starting")
        record = stream_chat(port, key, body, timeout=120)
        if record["error"] is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker never answered: {record['error']}")
        time.sleep(1)


def sent_late(row: dict) -> str:
    """The requests served after the long answer, when each was sent just before its end."""
    ahead = row.get("served_after_the_long_answer_sent_s_before_its_end", [])
    if not ahead or len(ahead) > 3:
        return ""
    return "; the other sent " + ", ".join(f"{seconds} s" for seconds in ahead) + " before it ended"


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Serving: continuous batching vs window batching, through the real HTTP stack",
        "",
        f"gunicorn ({results['gunicorn_threads']} threads) + Redis broker + one worker (`celery -A ... worker -P "
        f"threads -c 64`, torch threads {results['torch_threads']}, {results.get('dtype', 'float32')}, LoRA backend "
        f"torch), database "
        f"{results['database']}. Model: {results['model']}. {results['clients']} streaming clients, each asking "
        f"its own expert (LoRA r={results['rank']} on every projection), closed loop for {results['duration_s']} s "
        "and until the long answer ends; "
        f"client 0 first asks for {results['long_tokens']} tokens, every other request for one of "
        f"{results['tokens']} (end tokens forbidden, greedy). "
        + ("Before the clients start, every system has answered once (its adapter is resident). "
           if results.get("every_system_warmed") else "Only client 0's system answered before the clients start. ")
        + f"Machine: {machine['cpu_count']} cores shared with other sessions.",
        "",
        "| contender | requests | tokens | tokens/s | TTFT p50 (s) | TTFT p99 (s) | ITL p99 (s) | failed | "
        "requests sent while the long answer is in progress that got their first token before it ended | load average "
        "before → after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["contenders"].items():
        lines.append(
            f"| {name} | {row['requests']} | {row['tokens']} | {row['tokens_per_s']} | {row['ttft_p50_s']} | "
            f"{row['ttft_p99_s']} | {row['itl_p99_s']} | {row['failed']} | "
            f"{row['first_token_before_long_answer_ends']} of {row['arrived_during_long_answer']} (the long answer "
            f"took {row['long_answer_s']} s{sent_late(row)}) | {row['load_before']} → {row['load_after']} |")
    goals = results["goals"]
    lines += ["", f"Throughput ratio continuous / window: **{results['throughput_ratio']}x** (goal >= 2x: "
              f"{'met' if goals['throughput'] else 'not met'}); continuous TTFT p99 {results['contenders']['continuous']['ttft_p99_s']} s "
              f"(goal <= 1 s: {'met' if goals['ttft_p99'] else 'not met'}); failed "
              f"{results['contenders']['continuous']['failed']} (goal 0: {'met' if goals['failed'] else 'not met'}); "
              f"every request sent during the long answer, at least {TTFT_GOAL_S:g} s before its end, got its first "
              f"token before it ended: {'met' if goals['late_requests'] else 'not met'}.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny random Llama, 4 clients, a few seconds")
    parser.add_argument("--model", help="base model directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 48])
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--duration", type=float, default=30, help="seconds during which clients send requests")
    parser.add_argument("--gap-ms", type=float, default=100, help="client i starts i * gap after client 0")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker (MOSAIC_TORCH_THREADS)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the worker's dtype (MOSAIC_WORKER_DTYPE; auto: bfloat16 where the CPU computes it)")
    parser.add_argument("--gunicorn-threads", type=int, default=32)
    parser.add_argument("--redis-url", default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/10"))
    parser.add_argument("--contenders", nargs="+", default=["window", "continuous"],
                        choices=["window", "continuous"])
    parser.add_argument("--cold", dest="warm", action="store_false",
                        help="warm up one system only (by default every system answers once before the clients "
                             "start: its adapter is resident, as on a server that has served it before)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.tokens, args.long_tokens, args.duration = min(args.clients, 4), [4, 6], 24, 4

    import redis
    from transformers import AutoTokenizer

    from bench.cpu_serving import build_smoke_model, default_model_dir, save_experts
    from gpu_workers.serving import worker_dtype
    from tests.e2e.live import deployment_env, start_gunicorn, stop, stop_worker

    results: dict = {"contenders": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = build_smoke_model(scratch / "model") if args.smoke else Path(args.model or default_model_dir())
        base_name = "bench-tiny" if args.smoke else model_dir.name
        experts = {name: str(path) for name, path in save_experts(model_dir, scratch / "experts", args.clients,
                                                                   args.rank)}
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        logit_bias = {str(token): -100 for token in end_token_ids(tokenizer)}

        database_url = os.environ.get("DATABASE_URL", "")
        env = deployment_env(scratch, CELERY_BROKER_URL=args.redis_url, CELERY_RESULT_BACKEND=args.redis_url,
                             INFERENCE_DEADLINE_SECONDS=str(int(args.duration + 600)), LOG_LEVEL="ERROR")
        if database_url:
            env["DATABASE_URL"] = database_url
        fresh_database(env, scratch)
        redis.Redis.from_url(args.redis_url).flushdb()
        seeded = subprocess.run(
            [sys.executable, "-c", SEED, json.dumps({"model_dir": str(model_dir), "base_name": base_name,
                                                    "experts": experts})],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if seeded.returncode != 0:
            raise RuntimeError(f"seeding failed: {seeded.stderr[-2000:]}")
        deployment = json.loads(seeded.stdout.strip().splitlines()[-1])
        systems = [deployment["systems"][name] for name in experts]
        server, port = start_gunicorn(env, threads=args.gunicorn_threads)
        worker_env = {**env, "MOSAIC_WORKER_BASE_MODEL_PATH": str(model_dir), "MOSAIC_TORCH_THREADS": str(args.threads),
                      "MOSAIC_LORA_BACKEND": "torch", "OMP_NUM_THREADS": str(args.threads),
                      "MOSAIC_WORKER_DTYPE": args.dtype}
        try:
            for name in args.contenders:
                app_module = "bench.window_worker" if name == "window" else "gpu_workers.app"
                worker = start_worker(app_module, f"base.{base_name}", worker_env)
                try:
                    for system in systems if args.warm else systems[:1]:
                        warm_up(port, deployment["key"], system, worker, logit_bias)
                    load_before = [round(value, 2) for value in os.getloadavg()]
                    records = run_clients(port, deployment["key"], systems, args, logit_bias)
                    row = summarise(records)
                    row["load_before"] = load_before
                    row["load_after"] = [round(value, 2) for value in os.getloadavg()]
                    results["contenders"][name] = row
                    print(name, json.dumps({k: v for k, v in row.items() if k != "per_request"}), flush=True)
                finally:
                    stop_worker(worker, grace_s=30)
        finally:
            stop(server)

    contenders = results["contenders"]
    both = "window" in contenders and "continuous" in contenders
    ratio = round(contenders["continuous"]["tokens_per_s"] / contenders["window"]["tokens_per_s"], 2) if both else None
    continuous = contenders.get("continuous", {})
    results.update({
        "model": "tiny random Llama (smoke)" if args.smoke else str(model_dir),
        "database": "PostgreSQL" if database_url.startswith("postgres") else "SQLite",
        "clients": args.clients, "tokens": args.tokens, "long_tokens": args.long_tokens,
        "duration_s": args.duration, "gap_ms": args.gap_ms, "rank": args.rank, "torch_threads": args.threads,
        "dtype": str(worker_dtype({"MOSAIC_WORKER_DTYPE": args.dtype})).removeprefix("torch."),
        "every_system_warmed": args.warm,
        "gunicorn_threads": args.gunicorn_threads,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "throughput_ratio": ratio,
        "goals": {"throughput": bool(ratio and ratio >= 2), "ttft_p99": continuous.get("ttft_p99_s", 99) <= TTFT_GOAL_S,
                  "failed": continuous.get("failed", 1) == 0,
                  "late_requests": continuous.get("late_first_token_before_long_ends", False)},
    })
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "serving_smoke" if args.smoke else "serving"
    if not both:  # one contender alone: its figures, never in place of a side-by-side run's
        (out / f"{stem}_{'_'.join(contenders)}.json").write_text(json.dumps(results, indent=2) + "\n")
        return results
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
