"""Launch-parameter sweep of the mixed-LoRA Triton kernels on decode and prefill shapes, device time only.

    python -m bench.gpu_sweep            # CUDA: bench/results/gpu_sweep.json and gpu_sweep.md
    python -m bench.gpu_sweep --smoke    # tiny shapes under TRITON_INTERPRET=1: checks every config launches

For each projection shape (Llama-7B-shaped, r=16, bf16) it times the LoRA alone (shrink + expand, the plan
built once outside) for every LoraKernelConfig of a small grid, each replayed from a CUDA graph so that the
figure is device time, and reports the default config, the best config and the bytes-moved bandwidth of each.
The default is what gpu_workers.kernels.lora.default_kernel_config picks today; a best config that beats it
by a clear margin is the change to make.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.gpu_bench import Timer, relative_error
from gpu_workers.kernels.lora import (
    LoraKernelConfig,
    apply_lora,
    build_lora_plan,
    default_kernel_config,
    lora_reference,
)

FULL_SHAPES = [  # (in, out, adapters, tokens)
    (4096, 4096, 32, 64), (4096, 11008, 32, 64), (11008, 4096, 32, 64),
    (4096, 4096, 128, 64), (4096, 11008, 128, 64), (11008, 4096, 128, 64),
    (4096, 4096, 32, 4096),
]
SMOKE_SHAPES = [(64, 128, 4, 8)]
RANK = 16


def config_grid(smoke: bool) -> list[LoraKernelConfig]:
    if smoke:
        return [LoraKernelConfig(block_k=32, block_n=32, split_k=s) for s in (1, 2)]
    shrink = itertools.product((64, 128, 256), (None, 4, 16), (2, 4), (2, 4))
    configs = [LoraKernelConfig(block_k=k, split_k=s, shrink_warps=w, shrink_stages=st) for k, s, w, st in shrink]
    expand = itertools.product((32, 64, 128, 256), (2, 4, 8), (1, 2))
    configs += [LoraKernelConfig(block_n=n, expand_warps=w, expand_stages=st) for n, w, st in expand]
    return list(dict.fromkeys(configs))


def sweep_shape(shape, configs, device, dtype, timer) -> dict:
    in_features, out_features, n_adapters, tokens = shape
    torch.manual_seed(0)
    a = torch.randn(n_adapters, RANK, in_features, device=device, dtype=dtype) / in_features**0.5
    b = (torch.randn(n_adapters, RANK, out_features, device=device, dtype=dtype) * 0.01).transpose(1, 2)
    scalings = torch.full((n_adapters,), 2.0, device=device)
    ranks = torch.full((n_adapters,), RANK, dtype=torch.int32, device=device)
    x = torch.randn(tokens, in_features, device=device, dtype=dtype)
    slot = torch.randint(0, n_adapters, (tokens,), device=device)
    indices, weights = slot[:, None].to(torch.int32), torch.ones(tokens, 1, device=device)
    plan = build_lora_plan(indices, weights, n_slots=n_adapters)
    reference = lora_reference(x, a, b, scalings, indices, weights)
    used = int(slot.unique().numel())
    element = x.element_size()
    moved = element * (used * RANK * (in_features + out_features) + tokens * in_features + 2 * tokens * out_features)

    weight = torch.randn(out_features, in_features, device=device, dtype=dtype) / in_features**0.5
    base_ms = timer.graph(lambda: torch.nn.functional.linear(x, weight)) or timer(
        lambda: torch.nn.functional.linear(x, weight))
    default = default_kernel_config(dtype, RANK, in_features, plan.num_pairs)
    rows = []
    for config in [default] + [c for c in configs if c != default]:
        y = torch.zeros(tokens, out_features, device=device, dtype=dtype)

        def lora(config=config, y=y):
            return apply_lora(y, x, a, b, scalings, indices, weights, ranks=ranks, plan=plan, config=config,
                              backend="triton")

        try:
            error = relative_error(lora(y=torch.zeros_like(y)), reference)
            ms = timer.graph(lora) or timer(lora)
        except Exception as failure:  # noqa: BLE001 - a config the compiler refuses (shared memory) is skipped
            print(f"  {config}: {type(failure).__name__}: {str(failure)[:100]}", flush=True)
            continue
        rows.append({"config": config.__dict__, "ms": ms, "gb_per_s": moved / (ms / 1000) / 1e9, "rel_error": error})
    best = min(rows, key=lambda row: row["ms"])

    def with_base(config):
        def forward():
            return apply_lora(torch.nn.functional.linear(x, weight), x, a, b, scalings, indices, weights,
                              ranks=ranks, plan=plan, config=config, backend="triton")
        return timer.graph(forward) or timer(forward)

    default_total = with_base(default)
    best_total = with_base(LoraKernelConfig(**best["config"]))
    return {"in": in_features, "out": out_features, "adapters": n_adapters, "tokens": tokens, "bytes": moved,
            "base_ms": base_ms, "default": rows[0], "best": best, "speedup": rows[0]["ms"] / best["ms"],
            "default_ratio": default_total / base_ms, "best_ratio": best_total / base_ms,
            "configs_tried": len(rows), "all": rows}


def markdown(results: dict) -> str:
    lines = [f"# LoRA kernel launch sweep ({results['device']})", "",
             f"{results['configs']} configurations per shape, r={RANK}, bf16, device time from CUDA-graph replays; "
             f"bandwidth against the measured copy bandwidth {results['bandwidth_gb_s']:.0f} GB/s.", "",
             "LoRA alone, then base GEMM + LoRA as a multiple of the base GEMM alone (the per-projection goal).", "",
             "| in->out | adapters | tokens | base GEMM ms | LoRA default ms (GB/s) | LoRA best ms (GB/s, fraction) | "
             "speedup | GEMM+LoRA / GEMM: default, best | best config |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results["shapes"]:
        default, best = row["default"], row["best"]
        config = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        lines.append(
            f"| {row['in']}->{row['out']} | {row['adapters']} | {row['tokens']} | {row['base_ms']:.4f} | {default['ms']:.4f} "
            f"({default['gb_per_s']:.0f}) | {best['ms']:.4f} ({best['gb_per_s']:.0f}, "
            f"{best['gb_per_s'] / results['bandwidth_gb_s']:.0%}) | {row['speedup']:.2f}x | "
            f"{row['default_ratio']:.2f}x, {row['best_ratio']:.2f}x | {config} |"
        )
    return "\n".join(lines) + "\n"


def run(*, smoke: bool, out_dir: Path) -> dict:
    if smoke:
        device, dtype, shapes = torch.device("cpu"), torch.float32, SMOKE_SHAPES
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench.gpu_sweep needs a CUDA GPU; use --smoke (with TRITON_INTERPRET=1) on the CPU.")
        device, dtype, shapes = torch.device("cuda"), torch.bfloat16, FULL_SHAPES
    timer = Timer(device, quick=True, warmup_ms=5, rep_ms=25)
    configs = config_grid(smoke)
    if device.type == "cuda":
        source = torch.randn(1 << 29, device=device, dtype=torch.bfloat16)
        target = torch.empty_like(source)
        bandwidth = 2 * source.numel() * 2 / (timer(lambda: target.copy_(source)) / 1000) / 1e9
        del source, target
    else:
        bandwidth = float("nan")
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)",
               "configs": len(configs), "bandwidth_gb_s": bandwidth, "shapes": []}
    started = time.perf_counter()
    for shape in shapes:
        results["shapes"].append(sweep_shape(shape, configs, device, dtype, timer))
        row = results["shapes"][-1]
        print(f"{shape}: default {row['default']['ms']:.4f} ms, best {row['best']['ms']:.4f} ms "
              f"({row['speedup']:.2f}x) {row['best']['config']}  [{time.perf_counter() - started:.0f} s]", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_sweep.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (out_dir / "gpu_sweep.md").write_text(markdown(results))
    print(markdown(results))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (needs TRITON_INTERPRET=1)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="gpu_sweep_smoke_")) if args.smoke
                           else Path(__file__).resolve().parent / "results")
    run(smoke=args.smoke, out_dir=out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
