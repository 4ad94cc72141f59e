"""Scheduling benchmark (issue 12): continuous batching against the window batching it replaced, one run.

    python -m bench.scheduling              # SmolLM2-135M-Instruct, 16 clients
    python -m bench.scheduling --smoke      # a tiny random Llama: checks every code path in seconds

N clients, each with its own expert (a peft LoRA r=8 on every projection, as in bench.cpu_serving), arrive
`--gap-ms` apart on their own threads. The first asks for a long answer (`--long-tokens`), the others for short
ones (`--tokens`); greedy decoding. Contenders, on the same engine and the same experts:
  - window: bench.window_batcher.GenerationBatcher, today's before this issue (calls gathered for 5 ms, then one
    generate call runs to its end under the engine lock);
  - continuous: gpu_workers.batching.Scheduler (requests join at every decode step and leave when done).
Reported per contender: tokens/s (all tokens over the wall time from the first arrival to the last answer),
time to first token p50/p99, inter-token latency p99, failed requests, and whether the second client (arriving
while the long answer decodes) got its first token before the long answer ended. Greedy texts are compared.
Prints a table; writes bench/results/scheduling.md and .json. Engine level: no HTTP, no broker.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.cpu_serving import build_smoke_model, default_model_dir, prompts_for, save_experts

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_contender(generate, requests, gap_s: float) -> dict:
    """Each request on its own thread, arriving gap_s after the previous; times every token callback."""
    count = len(requests)
    submitted, token_times = [0.0] * count, [[] for _ in range(count)]
    finished, results, errors = [0.0] * count, [None] * count, [None] * count

    def client(position: int) -> None:
        submitted[position] = time.perf_counter()
        try:
            results[position] = generate([requests[position]],
                                         lambda _index, _text: token_times[position].append(time.perf_counter()))[0]
        except Exception as error:  # noqa: BLE001 - counted as a failed request
            errors[position] = repr(error)
        finished[position] = time.perf_counter()

    threads = []
    for position in range(count):
        thread = threading.Thread(target=client, args=(position,))
        thread.start()
        threads.append(thread)
        time.sleep(gap_s)
    for thread in threads:
        thread.join()
    start, end = min(submitted), max(finished)
    tokens = sum(result.completion_tokens for result in results if result is not None)
    ttft = [times[0] - submitted[p] for p, times in enumerate(token_times) if times]
    gaps = [later - earlier for times in token_times for earlier, later in zip(times, times[1:])]
    return {
        "tokens": tokens,
        "wall_s": round(end - start, 3),
        "tokens_per_s": round(tokens / (end - start), 2),
        "ttft_p50_s": round(percentile(ttft, 50), 3),
        "ttft_p99_s": round(percentile(ttft, 99), 3),
        "itl_p99_s": round(percentile(gaps, 99), 3),
        "failed": sum(error is not None for error in errors),
        "errors": [error for error in errors if error],
        "late_first_token_before_long_ends": bool(token_times[1]) and token_times[1][0] < finished[0],
        "long_answer_tokens": results[0].completion_tokens if results[0] is not None else 0,
        "texts": [result.text if result is not None else None for result in results],
    }


def markdown(results: dict) -> str:
    lines = [
        "# Scheduling: continuous batching vs window batching",
        "",
        f"{results['clients']} clients arriving {results['gap_ms']} ms apart, each with its own expert (LoRA r="
        f"{results['rank']}); the first asks for {results['long_tokens']} tokens, the others for "
        f"{results['tokens']}; greedy. Model: {results['model']}. Machine: {results['machine']['cpu_count']} "
        f"cores, torch threads {results['machine']['torch_threads']}, load before "
        f"{results['machine']['load_average_before']}.",
        "",
        "| contender | tokens/s | TTFT p50 (s) | TTFT p99 (s) | ITL p99 (s) | failed | 2nd client's first token before "
        "the long answer ends |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["contenders"].items():
        lines.append(f"| {name} | {row['tokens_per_s']} | {row['ttft_p50_s']} | {row['ttft_p99_s']} | "
                     f"{row['itl_p99_s']} | {row['failed']} | {'yes' if row['late_first_token_before_long_ends'] else 'no'} |")
    lines += ["", f"Throughput ratio continuous / window: {results['throughput_ratio']}x. "
              f"Greedy texts equal between contenders: {results['texts_equal']} of {results['clients']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny random Llama, 4 clients, few tokens")
    parser.add_argument("--model", help="base model directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--gap-ms", type=float, default=50)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.tokens, args.long_tokens, args.gap_ms = min(args.clients, 4), 4, 24, 5
    if args.threads:
        torch.set_num_threads(args.threads)

    from composition.engine import GenerationRequest
    from composition.experts import load_expert
    from gpu_workers.batching import Scheduler
    from gpu_workers.engine import MosaicEngine
    from bench.window_batcher import GenerationBatcher

    load_before = [round(value, 2) for value in os.getloadavg()]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = build_smoke_model(scratch / "model") if args.smoke else Path(args.model or default_model_dir())
        experts = save_experts(model_dir, scratch / "experts", args.clients, args.rank)
        engine = MosaicEngine(model_dir, lora_backend="torch", adapter_budget_bytes=1 << 32)
        for name, path in experts:
            engine.register_expert(load_expert(name, path))
        prompts = prompts_for(engine.tokenizer, args.clients)
        requests = [GenerationRequest(prompt=prompt, mixture={name: 1.0},
                                      max_tokens=args.long_tokens if position == 0 else args.tokens)
                    for position, (prompt, (name, _path)) in enumerate(zip(prompts, experts))]
        engine.generate(requests[:2])  # warm up
        window = GenerationBatcher(engine, max_batch=64, window_s=0.005)
        scheduler = Scheduler(engine)
        contenders = {
            "window": run_contender(lambda rs, cb: window.generate(rs, on_token=cb), requests, args.gap_ms / 1000),
            "continuous": run_contender(lambda rs, cb: scheduler.generate(rs, on_token=cb), requests,
                                        args.gap_ms / 1000),
        }
    texts = [row.pop("texts") for row in contenders.values()]
    results = {
        "model": "tiny random Llama (smoke)" if args.smoke else str(model_dir),
        "clients": args.clients, "tokens": args.tokens, "long_tokens": args.long_tokens, "gap_ms": args.gap_ms,
        "rank": args.rank,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "python": platform.python_version(),
                    "torch": torch.__version__},
        "contenders": contenders,
        "throughput_ratio": round(contenders["continuous"]["tokens_per_s"] / contenders["window"]["tokens_per_s"], 2),
        "texts_equal": sum(a == b for a, b in zip(*texts)),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scheduling.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scheduling.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
