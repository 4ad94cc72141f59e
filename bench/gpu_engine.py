"""End-to-end generation with the real base model's architecture: base alone, peft's mixed batch and Mosaic's
engine, side by side in one run, with 8, 32 and 128 distinct experts among the concurrent requests.

    python -m bench.gpu_engine --model-dir DIR          # CUDA: bench/results/gpu_engine.json and gpu_engine.md
    python -m bench.gpu_engine --model-dir DIR --smoke  # the CPU, two layers, a few requests: checks the code paths

DIR holds the base model's config.json and tokenizer (SmolLM2-135M-Instruct as registered by
`register_base_model --default`). Its weights are loaded when DIR has them; otherwise the model is built from
the config with seeded random weights (the GPU machine receives at most 64 MiB of files, and SmolLM2's weights
are 270 MB in bf16). Same shapes, same kernels, same work per token: a throughput figure does not depend on
the weights' values, only on how many tokens are generated, which every system here reports and which the
figures are divided by.

Every system decodes the same prompts greedily, in one batch of --requests, for up to --max-tokens tokens:
  base   transformers' generate on the base model;
  peft   transformers' generate on the peft model with `adapter_names` (request i uses adapter i mod E);
  Mosaic MosaicEngine.generate with one expert per request (request i uses expert i mod E), fused kernels.
The adapters (r=16 on q, k, v, o, gate, up and down) are peft's own, copied into Mosaic's pool.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.gpu_bench import add_peft_adapters, experts_from_peft, versions

RANK = 16
PROMPTS = [
    "Explain in one paragraph why the sky is blue.",
    "Write a short poem about a lighthouse.",
    "What is the capital of Australia, and why was it chosen?",
    "List three uses of a paperclip.",
    "Summarise the plot of a detective story in two sentences.",
    "How do plants turn sunlight into energy?",
    "Give me a recipe idea with lentils.",
    "What should I check before buying a used bicycle?",
]


def load_base(model_dir: Path, device, dtype, *, layers: int | None):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = AutoConfig.from_pretrained(model_dir)
    if layers is not None:
        config.num_hidden_layers = layers
    has_weights = any(model_dir.glob("*.safetensors")) and layers is None
    if has_weights:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    else:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    return model.to(device).eval(), tokenizer, "loaded" if has_weights else "random (seeded), from config.json"


def timed(device, fn) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def hf_generate(model, tokenizer, prompts, max_tokens, device, **extra) -> tuple[float, int]:
    """Seconds and generated tokens of one greedy batch through transformers' generate."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)

    def run():
        with torch.inference_mode():
            return model.generate(**batch, max_new_tokens=max_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id, **extra)

    run()  # warm-up at full length: kernels compiled and the allocator grown for the whole KV cache
    seconds, output = timed(device, run)
    generated = output[:, batch["input_ids"].shape[1]:]
    eos = tokenizer.eos_token_id
    # A row that ended early is padded after its end token; count the tokens up to and including it.
    ended = (generated == eos).int()
    lengths = torch.where(ended.any(dim=1), ended.argmax(dim=1) + 1, torch.full_like(ended[:, 0], generated.shape[1]))
    return seconds, int(lengths.sum())


def mosaic_generate(engine, prompts, mixtures, max_tokens, device) -> tuple[float, int]:
    from composition.engine import GenerationRequest

    def requests(tokens):
        return [GenerationRequest(prompt=prompt, mixture=mixture, max_tokens=tokens, temperature=0.0)
                for prompt, mixture in zip(prompts, mixtures)]

    engine.generate(requests(max_tokens))  # warm-up at full length, as for transformers
    seconds, generations = timed(device, lambda: engine.generate(requests(max_tokens)))
    return seconds, sum(g.completion_tokens for g in generations)


def run(*, model_dir: Path, smoke: bool, out_dir: Path, requests: int, max_tokens: int,
        expert_counts: list[int]) -> dict:
    from gpu_workers.engine import MosaicEngine

    if smoke:
        device, dtype, layers = torch.device("cpu"), torch.float32, 2
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench.gpu_engine needs a CUDA GPU; use --smoke on the CPU.")
        device, dtype, layers = torch.device("cuda"), torch.bfloat16, None
    model, tokenizer, weights = load_base(model_dir, device, dtype, layers=layers)
    prompts = [PROMPTS[i % len(PROMPTS)] + f" (request {i})" for i in range(requests)]
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "mode": "smoke (CPU, 2 layers; not figures)" if smoke else "full",
        "versions": versions(), "model": model.config.name_or_path or str(model_dir), "weights": weights,
        "layers": model.config.num_hidden_layers, "requests": requests, "max_tokens": max_tokens, "rank": RANK,
        "rows": [],
    }
    seconds, tokens = hf_generate(model, tokenizer, prompts, max_tokens, device)
    results["base_hf"] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
    print(f"base (transformers): {tokens / seconds:.0f} tokens/s", flush=True)

    seconds, (peft_model, names) = timed(device, lambda: add_peft_adapters(model, max(expert_counts), RANK, dtype))
    print(f"{len(names)} peft adapters built in {seconds:.1f} s", flush=True)
    peft_figures = {}
    for count in expert_counts:
        adapter_names = [names[i % count] for i in range(requests)]
        seconds, tokens = hf_generate(peft_model, tokenizer, prompts, max_tokens, device, adapter_names=adapter_names)
        peft_figures[count] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
        print(f"peft, {count} experts: {tokens / seconds:.0f} tokens/s", flush=True)
    experts = experts_from_peft(peft_model, names)
    model = peft_model.unload()

    adapter_bytes = sum(m.A.numel() + m.B.numel() for e in experts for m in e.adapter.modules.values()) * 2
    engine = MosaicEngine(model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                          adapter_budget_bytes=2 * adapter_bytes + (1 << 30), max_slots=max(expert_counts))
    for expert in experts:
        engine.register_expert(expert)
    seconds, tokens = mosaic_generate(engine, prompts, [{} for _ in prompts], max_tokens, device)
    results["mosaic_no_adapters"] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
    print(f"Mosaic, no adapters: {tokens / seconds:.0f} tokens/s", flush=True)
    base_rate = results["base_hf"]["tokens_per_s"]
    for count in expert_counts:
        mixtures = [{names[i % count]: 1.0} for i in range(requests)]
        seconds, tokens = mosaic_generate(engine, prompts, mixtures, max_tokens, device)
        mosaic_rate, peft_rate = tokens / seconds, peft_figures[count]["tokens_per_s"]
        results["rows"].append({
            "experts": count, "peft": peft_figures[count],
            "mosaic": {"seconds": seconds, "tokens": tokens, "tokens_per_s": mosaic_rate},
            "peft_vs_base": peft_rate / base_rate, "mosaic_vs_base": mosaic_rate / base_rate,
            "mosaic_vs_peft": mosaic_rate / peft_rate,
        })
        print(f"Mosaic, {count} experts: {mosaic_rate:.0f} tokens/s ({mosaic_rate / peft_rate:.2f}x peft)", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_engine.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (out_dir / "gpu_engine.md").write_text(markdown(results))
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    base, bare = results["base_hf"], results["mosaic_no_adapters"]
    lines = [
        f"# Generation end to end ({results['device']}, {results['mode']})", "",
        f"{results['model']}: {results['layers']} layers, weights {results['weights']}. "
        f"{results['requests']} concurrent requests, greedy, up to {results['max_tokens']} tokens each; "
        f"adapters r={results['rank']} on all seven projections. Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".", "",
        f"Base model alone (transformers generate): {base['tokens_per_s']:.0f} tokens/s. "
        f"Mosaic's engine with no adapters: {bare['tokens_per_s']:.0f} tokens/s "
        f"({bare['tokens_per_s'] / base['tokens_per_s']:.2f}x).", "",
        "| distinct experts | peft tokens/s (x base) | Mosaic tokens/s (x base) | Mosaic / peft |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['experts']} | {row['peft']['tokens_per_s']:.0f} ({row['peft_vs_base']:.2f}x) | "
            f"{row['mosaic']['tokens_per_s']:.0f} ({row['mosaic_vs_base']:.2f}x) | {row['mosaic_vs_peft']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="config.json and tokenizer of the base model")
    parser.add_argument("--smoke", action="store_true", help="the CPU, two layers, a few requests")
    parser.add_argument("--requests", type=int, default=None, help="concurrent requests (default 128; smoke 4)")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per request (default 32; smoke 3)")
    parser.add_argument("--experts", type=int, nargs="+", default=None, help="distinct experts (default 8 32 128)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        parser.error(f"{args.model_dir} has no config.json")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="gpu_engine_smoke_")) if args.smoke
                           else Path(__file__).resolve().parent / "results")
    run(model_dir=args.model_dir, smoke=args.smoke, out_dir=out_dir,
        requests=args.requests or (4 if args.smoke else 128), max_tokens=args.max_tokens or (3 if args.smoke else 32),
        expert_counts=args.experts or ([2, 4] if args.smoke else [8, 32, 128]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
