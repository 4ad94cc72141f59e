"""GPU benchmark for issue 5: base model alone vs peft `adapter_names` vs Mosaic, side by side, in one run.

    python -m bench.gpu_bench            # CUDA only: figures into bench/results/gpu.json and gpu.md
    python -m bench.gpu_bench --smoke    # tiny shapes on the CPU (torch backends): checks every code path

Sections (all bf16 on the GPU, random weights, CUDA-event timing through triton.testing.do_bench: warm-up, then
the median of repeats, with the L2 cache flushed between repeats):
  1. device memory bandwidth, measured with a large device-to-device copy (bytes read + bytes written);
  2. Llama-7B-shaped layers x8 (hidden 4096, intermediate 11008), 32 LoRA adapters r=16 on q,k,v,o,gate,up,
     down, one forward pass at 64x1 and 16x256 tokens, 32 distinct adapters in the batch: base alone, peft
     mixed batch (adapter_names), Mosaic (plan + fused kernels), with Mosaic's logits checked against peft's;
  3. per projection (4096->4096, 4096->11008, 11008->4096), 32 and 128 adapters, 64 and 4096 tokens: base GEMM
     and base GEMM + LoRA by gather+bmm, a loop over adapters, a masked dense product, and the Mosaic kernel;
  4. the LoRA kernel alone on decode shapes: achieved bandwidth vs the measured device bandwidth;
  5. a 4-expert next-token mixture vs one expert (64 rows, vocabulary 32000);
  6. end-to-end generation throughput: 64 concurrent requests over 32 experts through MosaicEngine.generate.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GOALS = {
    "model_decode_ratio": 1.3,  # Mosaic mixed-32 / base at 64x1
    "model_prefill_ratio": 1.15,  # at 16x256
    "projection_32_ratio": 1.15,  # per projection, 32 adapters, 64 tokens, / base GEMM
    "projection_128_ratio": 1.3,  # 128 adapters, 64 tokens
    "lora_bandwidth_fraction": 0.60,  # of the measured device bandwidth, decode shapes
    "mixture_ratio": 1.5,  # 4-expert mixture / one expert
}


@dataclass(frozen=True)
class Scale:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    adapters: int
    rank: int
    decode: tuple[int, int]
    prefill: tuple[int, int]
    projections: tuple[tuple[int, int], ...]
    projection_adapters: tuple[int, ...]
    projection_tokens: tuple[int, ...]
    e2e_requests: int
    e2e_experts: int
    e2e_max_tokens: int
    mixture_rows: int
    mixture_vocab: int
    copy_bytes: int


FULL = Scale(
    hidden=4096, intermediate=11008, layers=8, heads=32, vocab=32000, adapters=32, rank=16,
    decode=(64, 1), prefill=(16, 256),
    projections=((4096, 4096), (4096, 11008), (11008, 4096)), projection_adapters=(32, 128),
    projection_tokens=(64, 4096),
    e2e_requests=64, e2e_experts=32, e2e_max_tokens=64, mixture_rows=64, mixture_vocab=32000, copy_bytes=1 << 30,
)
SMOKE = Scale(
    hidden=64, intermediate=128, layers=2, heads=2, vocab=100, adapters=4, rank=4,
    decode=(8, 1), prefill=(2, 16),
    projections=((64, 64), (64, 128), (128, 64)), projection_adapters=(4, 8), projection_tokens=(8, 64),
    e2e_requests=8, e2e_experts=4, e2e_max_tokens=6, mixture_rows=8, mixture_vocab=1000, copy_bytes=1 << 20,
)


class Timer:
    """Median milliseconds of fn: CUDA events via triton.testing.do_bench on the GPU, perf_counter elsewhere."""

    def __init__(self, device: torch.device, *, quick: bool, warmup_ms: int = 25, rep_ms: int = 100):
        self.device = device
        self.quick = quick
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms

    def __call__(self, fn) -> float:
        if self.device.type == "cuda":
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, return_mode="median"))
        fn()
        samples = []
        for _ in range(3 if self.quick else 10):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    def graph(self, fn) -> float | None:
        """Median ms of replaying fn captured in a CUDA graph: the device time without Python and launch
        overhead (many small launches). None on the CPU, or when fn cannot be captured (a host sync)."""
        if self.device.type != "cuda":
            return None
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
        except Exception as error:  # noqa: BLE001 - reported, not fatal
            print(f"  (no CUDA graph: {type(error).__name__}: {str(error)[:120]})", flush=True)
            torch.cuda.synchronize()
            return None
        return self(graph.replay)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


# -- 1. device bandwidth --------------------------------------------------------------------------------------
def device_bandwidth(scale: Scale, device, timer) -> dict:
    source = torch.randn(scale.copy_bytes // 2, device=device, dtype=torch.bfloat16)
    target = torch.empty_like(source)
    ms = timer(lambda: target.copy_(source))
    return {"copy_bytes": scale.copy_bytes, "ms": ms, "gb_per_s": 2 * scale.copy_bytes / (ms / 1000) / 1e9}


# -- 2. model level ---------------------------------------------------------------------------------------------
def build_model(scale: Scale, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=scale.vocab, hidden_size=scale.hidden, intermediate_size=scale.intermediate,
        num_hidden_layers=scale.layers, num_attention_heads=scale.heads, num_key_value_heads=scale.heads,
        max_position_embeddings=4096, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def add_peft_adapters(model, n_adapters: int, rank: int, dtype):
    """n_adapters random LoRA adapters of the given rank on every projection, through peft itself."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0,
                        init_lora_weights=False)
    names = [f"a{i}" for i in range(n_adapters)]
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    # peft's add_adapter walks the whole model once per adapter, which grows with the adapters already there
    # (12 adapters on SmolLM2's 30 layers took 81 s on the CPU); each LoRA layer takes the others directly.
    layers = [module for module in peft_model.modules() if isinstance(module, LoraLayer)]
    for name in names[1:]:
        peft_model.peft_config[name] = config
        for layer in layers:
            layer.update_layer(name, rank, 2 * rank, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_A" in parameter_name:
                parameter.copy_(torch.randn_like(parameter) / parameter.shape[1] ** 0.5)
            elif "lora_B" in parameter_name:
                parameter.copy_(torch.randn_like(parameter) * 0.01)
    return peft_model.to(dtype).eval(), names


def experts_from_peft(peft_model, names):
    """The same adapters as composition Experts (A, B, scaling per module), to load into Mosaic's pool."""
    from composition.experts import Expert, LoraAdapter, LoraModule
    from peft.tuners.lora import LoraLayer

    modules: dict[str, dict] = {name: {} for name in names}
    for module_name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            for name in names:
                modules[name][module_name] = LoraModule(
                    A=module.lora_A[name].weight.detach().clone(), B=module.lora_B[name].weight.detach().clone(),
                    scaling=float(module.scaling[name]),
                )
    return [Expert(id=name, adapter=LoraAdapter(modules=modules[name])) for name in names]


def model_level(scale: Scale, device, dtype, timer, backend: str) -> tuple[dict, object, list]:
    from gpu_workers.engine import LoraBatchContext, adaptable_linears, attach_multi_lora, detach_multi_lora
    from gpu_workers.adapter_pool import AdapterPool

    model = build_model(scale, device, dtype)
    shapes = {"decode": scale.decode, "prefill": scale.prefill}
    inputs = {key: torch.randint(3, scale.vocab, shape, device=device) for key, shape in shapes.items()}
    results: dict = {"shapes": {key: list(shape) for key, shape in shapes.items()}}

    base_logits = {}
    with torch.inference_mode():
        for key, ids in inputs.items():
            results[f"base_{key}_ms"] = timer(lambda ids=ids: model(input_ids=ids))
            results[f"base_{key}_graph_ms"] = timer.graph(lambda ids=ids: model(input_ids=ids))
            base_logits[key] = model(input_ids=ids).logits

        peft_model, names = add_peft_adapters(model, scale.adapters, scale.rank, dtype)
        peft_logits = {}
        for key, ids in inputs.items():
            adapter_names = [names[row % len(names)] for row in range(ids.shape[0])]
            results[f"peft_{key}_ms"] = timer(lambda ids=ids, a=adapter_names: peft_model(input_ids=ids, adapter_names=a))
            peft_logits[key] = peft_model(input_ids=ids, adapter_names=adapter_names).logits
        experts = experts_from_peft(peft_model, names)
        model = peft_model.unload()

        pool = AdapterPool(adaptable_linears(model), device=device, dtype=dtype, budget_bytes=16 << 30,
                           max_slots=max(128, scale.adapters), initial_rank=scale.rank)
        context = LoraBatchContext()
        attach_multi_lora(model, pool, context, backend)
        for expert in experts:
            pool.register(expert)
        slots = pool.acquire(names)
        for key, ids in inputs.items():
            lane_slots = torch.tensor([slots[names[row % len(names)]] for row in range(ids.shape[0])], dtype=torch.int32)

            def forward(ids=ids, lane_slots=lane_slots):
                context.set(lane_slots, ids.shape[1], n_slots=pool.capacity, device=device,
                            use_plan=device.type == "cuda" and backend != "torch")
                return model(input_ids=ids)

            results[f"mosaic_{key}_ms"] = timer(forward)
            # In a graph the rows' adapters (and the plan) are set once, outside; the replay is the forward.
            forward()
            context.set(lane_slots, ids.shape[1], n_slots=pool.capacity, device=device,
                        use_plan=device.type == "cuda" and backend != "torch")
            results[f"mosaic_{key}_graph_ms"] = timer.graph(lambda ids=ids: model(input_ids=ids))
            logits = forward().logits
            results[f"mosaic_vs_peft_{key}_logits_rel_error"] = relative_error(logits, peft_logits[key])
            # How much the adapters move the logits at all: the error above is small only relative to this.
            results[f"adapters_vs_base_{key}_logits_rel_change"] = relative_error(logits, base_logits[key])
        context.clear()
        detach_multi_lora(model)
    for key in shapes:
        results[f"peft_{key}_ratio"] = results[f"peft_{key}_ms"] / results[f"base_{key}_ms"]
        results[f"mosaic_{key}_ratio"] = results[f"mosaic_{key}_ms"] / results[f"base_{key}_ms"]
        if results[f"base_{key}_graph_ms"] and results[f"mosaic_{key}_graph_ms"]:
            results[f"mosaic_{key}_graph_ratio"] = results[f"mosaic_{key}_graph_ms"] / results[f"base_{key}_graph_ms"]
    return results, model, experts


# -- 3 and 4. per projection, kernel bandwidth ------------------------------------------------------------------
def projection_level(scale: Scale, device, dtype, timer, backend: str, bandwidth_gb_s: float | None) -> list[dict]:
    import torch.nn.functional as F

    from gpu_workers.kernels.lora import apply_lora, build_lora_plan

    rows = []
    rank = scale.rank
    for in_features, out_features in scale.projections:
        weight = torch.randn(out_features, in_features, device=device, dtype=dtype) / in_features**0.5
        for n_adapters in scale.projection_adapters:
            a = torch.randn(n_adapters, rank, in_features, device=device, dtype=dtype) / in_features**0.5
            # The pool's layout: rank-major storage seen as [n, out, r] (see gpu_workers.adapter_pool).
            b = (torch.randn(n_adapters, rank, out_features, device=device, dtype=dtype) * 0.01).transpose(1, 2)
            scalings = torch.full((n_adapters,), 2.0, device=device)
            ranks = torch.full((n_adapters,), rank, dtype=torch.int32, device=device)
            a_cat = a.reshape(n_adapters * rank, in_features)
            b_cat = b.permute(1, 0, 2).reshape(out_features, n_adapters * rank)
            for tokens in scale.projection_tokens:
                x = torch.randn(tokens, in_features, device=device, dtype=dtype)
                slot = torch.randint(0, n_adapters, (tokens,), device=device)
                indices, weights = slot[:, None].to(torch.int32), torch.ones(tokens, 1, device=device)
                plan = build_lora_plan(indices, weights, n_slots=n_adapters)
                groups = [(s, (slot == s).nonzero()[:, 0]) for s in slot.unique().tolist()]
                mask = (F.one_hot(slot, n_adapters).to(dtype) * 2.0).repeat_interleave(rank, dim=1)

                def base():
                    return F.linear(x, weight)

                def gather_bmm():
                    y = F.linear(x, weight)
                    h = torch.bmm(a[slot], x[:, :, None])
                    return y.add_((torch.bmm(b[slot], h)[:, :, 0]) * scalings[slot][:, None].to(dtype))

                def loop():
                    y = F.linear(x, weight)
                    for s, picked in groups:
                        y[picked] += (x[picked] @ a[s].T @ b[s].T) * 2.0
                    return y

                def masked_dense():
                    y = F.linear(x, weight)
                    return y.add_(((x @ a_cat.T) * mask) @ b_cat.T)

                def mosaic():
                    y = F.linear(x, weight)
                    return apply_lora(y, x, a, b, scalings, indices, weights, ranks=ranks, plan=plan, backend=backend)

                reference = gather_bmm().float()
                row = {"in": in_features, "out": out_features, "adapters": n_adapters, "tokens": tokens,
                       "mosaic_rel_error": relative_error(mosaic(), reference),
                       "masked_dense_rel_error": relative_error(masked_dense(), reference)}
                for name, fn in (("base", base), ("gather_bmm", gather_bmm), ("loop", loop),
                                 ("masked_dense", masked_dense), ("mosaic", mosaic)):
                    row[f"{name}_ms"] = timer(fn)
                    row[f"{name}_graph_ms"] = timer.graph(fn)
                for name in ("gather_bmm", "loop", "masked_dense", "mosaic"):
                    row[f"{name}_ratio"] = row[f"{name}_ms"] / row["base_ms"]
                    if row["base_graph_ms"] and row[f"{name}_graph_ms"]:
                        row[f"{name}_graph_ratio"] = row[f"{name}_graph_ms"] / row["base_graph_ms"]
                row["plan_ms"] = timer(lambda: build_lora_plan(indices, weights, n_slots=n_adapters))

                y_alone = F.linear(x, weight)
                lora_alone = lambda: apply_lora(y_alone, x, a, b, scalings, indices, weights,  # noqa: E731
                                                ranks=ranks, plan=plan, backend=backend)
                row["lora_alone_ms"] = timer(lora_alone)
                row["lora_alone_graph_ms"] = timer.graph(lora_alone)
                used = len(groups)
                element = torch.tensor([], dtype=dtype).element_size()
                moved = element * (used * rank * (in_features + out_features) + tokens * in_features
                                   + 2 * tokens * out_features)
                row["lora_bytes"] = moved
                device_ms = row["lora_alone_graph_ms"] or row["lora_alone_ms"]
                row["lora_gb_per_s"] = moved / (device_ms / 1000) / 1e9
                if bandwidth_gb_s:
                    row["lora_bandwidth_fraction"] = row["lora_gb_per_s"] / bandwidth_gb_s
                rows.append(row)
    return rows


# -- 5. logit mixture -------------------------------------------------------------------------------------------
def mixture_level(scale: Scale, device, timer, backend: str) -> dict:
    from gpu_workers.kernels.mixture import mix_next_token_logprobs, mixture_reference

    results = {"rows": scale.mixture_rows, "vocab": scale.mixture_vocab}
    for k in (1, 4):
        logits = torch.randn(scale.mixture_rows, k, scale.mixture_vocab, device=device, dtype=torch.bfloat16) * 3
        weights = torch.rand(scale.mixture_rows, k, device=device) + 0.1
        results[f"mosaic_k{k}_ms"] = timer(lambda: mix_next_token_logprobs(logits, weights, temperature=0.8,
                                                                           backend=backend, check=False))
        results[f"torch_k{k}_ms"] = timer(lambda: mixture_reference(logits, weights, temperature=0.8))
        if k == 4:
            results["mosaic_vs_reference_max_abs"] = float(
                (mix_next_token_logprobs(logits, weights, temperature=0.8, backend=backend, check=False)
                 - mixture_reference(logits.float(), weights, temperature=0.8)).abs().max())
        if k == 1:
            results["log_softmax_one_expert_ms"] = timer(lambda: torch.log_softmax(logits[:, 0].float() / 0.8, -1))
    results["mosaic_k4_vs_k1_ratio"] = results["mosaic_k4_ms"] / results["mosaic_k1_ms"]
    results["mosaic_k4_vs_log_softmax_ratio"] = results["mosaic_k4_ms"] / results["log_softmax_one_expert_ms"]
    return results


# -- 6. end to end ------------------------------------------------------------------------------------------------
def end_to_end(scale: Scale, model, experts, device, dtype, backend: str) -> dict:
    from composition.engine import GenerationRequest
    from composition.world import build_char_tokenizer
    from gpu_workers.engine import MosaicEngine

    engine = MosaicEngine(model=model, tokenizer=build_char_tokenizer(), device=device, dtype=dtype,
                          adapter_budget_bytes=16 << 30, max_slots=max(128, scale.e2e_experts), lora_backend=backend)
    for expert in experts[: scale.e2e_experts]:
        engine.register_expert(expert)
    ids = [expert.id for expert in experts[: scale.e2e_experts]]

    def requests(with_experts: bool, max_tokens: int):
        return [GenerationRequest(prompt=f"request {i}: tell me something about {i * 7 % 13}",
                                  mixture={ids[i % len(ids)]: 1.0} if with_experts else {},
                                  max_tokens=max_tokens, temperature=0.0)
                for i in range(scale.e2e_requests)]

    results = {"requests": scale.e2e_requests, "experts": len(ids), "max_tokens": scale.e2e_max_tokens}
    for label, with_experts in (("base", False), ("mosaic", True)):
        engine.generate(requests(with_experts, 2))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        generations = engine.generate(requests(with_experts, scale.e2e_max_tokens))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = sum(g.completion_tokens for g in generations)
        results[f"{label}_seconds"] = seconds
        results[f"{label}_completion_tokens"] = tokens
        results[f"{label}_tokens_per_s"] = tokens / seconds
    results["mosaic_vs_base_throughput"] = results["mosaic_tokens_per_s"] / results["base_tokens_per_s"]
    return results


# -- report ---------------------------------------------------------------------------------------------------------
def goals(results: dict) -> dict:
    """Each goal of the issue against the figures: eager (as called from Python) and, where the GPU allowed
    the capture, CUDA-graph replays (device time, launch overhead removed)."""
    model, projections = results["model"], results["projections"]
    decode_rows = [r for r in projections if r["tokens"] == min(r["tokens"] for r in projections)]
    fewest, most = min(r["adapters"] for r in decode_rows), max(r["adapters"] for r in decode_rows)
    checks: dict[str, tuple[str, float]] = {}
    for suffix in ("", "_graph"):
        label = " (graph)" if suffix else ""
        for key, goal in (("decode", "model_decode_ratio"), ("prefill", "model_prefill_ratio")):
            if f"mosaic_{key}{suffix}_ratio" in model:
                checks[goal + label] = (goal, model[f"mosaic_{key}{suffix}_ratio"])
        for adapters, goal in ((fewest, "projection_32_ratio"), (most, "projection_128_ratio")):
            values = [r.get(f"mosaic{suffix}_ratio") for r in decode_rows if r["adapters"] == adapters]
            if values and all(v is not None for v in values):
                checks[goal + label] = (goal, max(values))
    checks["mixture_ratio"] = ("mixture_ratio", results["mixture"]["mosaic_k4_vs_k1_ratio"])
    fractions = [r["lora_bandwidth_fraction"] for r in decode_rows if "lora_bandwidth_fraction" in r]
    if fractions:
        checks["lora_bandwidth_fraction"] = ("lora_bandwidth_fraction", min(fractions))
    return {
        name: {"value": value, "goal": GOALS[goal],
               "met": value >= GOALS[goal] if goal == "lora_bandwidth_fraction" else value <= GOALS[goal]}
        for name, (goal, value) in checks.items()
    }


def markdown(results: dict) -> str:
    model, mixture, e2e = results["model"], results["mixture"], results["end_to_end"]
    lines = [
        f"# GPU benchmark ({results['device']}, {results['mode']})",
        "",
        f"torch {results['versions']['torch']}, triton {results['versions']['triton']}, "
        f"transformers {results['versions']['transformers']}, peft {results['versions']['peft']}.",
        f"Device copy bandwidth: {results['bandwidth']['gb_per_s']:.0f} GB/s.",
        "",
        "## One forward pass, Llama-7B-shaped layers, mixed batch over "
        f"{results['scale']['adapters']} adapters r={results['scale']['rank']}",
        "",
        "| tokens | base ms | peft ms (x base) | Mosaic ms (x base) | CUDA graph: base / Mosaic ms (x) | "
        "Mosaic vs peft logits rel. error (adapters vs base) |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("decode", "prefill"):
        batch, seq = model["shapes"][key]
        graph = (f"{model[f'base_{key}_graph_ms']:.3f} / {model[f'mosaic_{key}_graph_ms']:.3f} "
                 f"({model[f'mosaic_{key}_graph_ratio']:.2f}x)" if f"mosaic_{key}_graph_ratio" in model else "-")
        lines.append(
            f"| {batch}x{seq} | {model[f'base_{key}_ms']:.3f} | {model[f'peft_{key}_ms']:.3f} "
            f"({model[f'peft_{key}_ratio']:.2f}x) | {model[f'mosaic_{key}_ms']:.3f} "
            f"({model[f'mosaic_{key}_ratio']:.2f}x) | {graph} | "
            f"{model[f'mosaic_vs_peft_{key}_logits_rel_error']:.2e} "
            f"({model[f'adapters_vs_base_{key}_logits_rel_change']:.2e}) |"
        )
    lines += [
        "",
        "## Per projection: base GEMM + LoRA, as a multiple of the base GEMM alone",
        "",
        "Eager (called from Python), then in brackets replayed from a CUDA graph (device time), where captured.",
        "",
        "| in->out | adapters | tokens | base ms | gather+bmm | loop | masked dense | Mosaic | plan ms | "
        "LoRA alone ms | LoRA GB/s (fraction) | Mosaic rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(r, name):
        graph = r.get(f"{name}_graph_ratio")
        return f"{r[f'{name}_ratio']:.2f}x" + (f" ({graph:.2f}x)" if graph else "")

    for r in results["projections"]:
        fraction = f" ({r['lora_bandwidth_fraction']:.0%})" if "lora_bandwidth_fraction" in r else ""
        alone_graph = f" ({r['lora_alone_graph_ms']:.4f})" if r.get("lora_alone_graph_ms") else ""
        lines.append(
            f"| {r['in']}->{r['out']} | {r['adapters']} | {r['tokens']} | {r['base_ms']:.4f} | "
            f"{ratio(r, 'gather_bmm')} | {ratio(r, 'loop')} | {ratio(r, 'masked_dense')} | "
            f"{ratio(r, 'mosaic')} | {r['plan_ms']:.4f} | {r['lora_alone_ms']:.4f}{alone_graph} | "
            f"{r['lora_gb_per_s']:.0f}{fraction} | {r['mosaic_rel_error']:.1e} |"
        )
    lines += [
        "",
        f"## Next-token mixture ({mixture['rows']} rows, vocabulary {mixture['vocab']})",
        "",
        f"Mosaic k=1 {mixture['mosaic_k1_ms']:.4f} ms, k=4 {mixture['mosaic_k4_ms']:.4f} ms "
        f"({mixture['mosaic_k4_vs_k1_ratio']:.2f}x one expert; {mixture['mosaic_k4_vs_log_softmax_ratio']:.2f}x a "
        f"plain log_softmax of one expert at {mixture['log_softmax_one_expert_ms']:.4f} ms); torch reference k=4 "
        f"{mixture['torch_k4_ms']:.4f} ms; max abs difference {mixture['mosaic_vs_reference_max_abs']:.1e}.",
        "",
        f"## End to end: {e2e['requests']} concurrent requests over {e2e['experts']} experts, "
        f"{e2e['max_tokens']} tokens each",
        "",
        f"Base only {e2e['base_tokens_per_s']:.0f} tokens/s; Mosaic {e2e['mosaic_tokens_per_s']:.0f} tokens/s "
        f"({e2e['mosaic_vs_base_throughput']:.2f}x of base).",
        "",
        "## Goals",
        "",
        "| goal | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, check in results["goals"].items():
        lines.append(f"| {name} | {check['value']:.3f} | {check['goal']} | {'yes' if check['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    import peft
    import transformers

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover
        triton_version = "none"
    return {"torch": torch.__version__, "triton": triton_version, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def run(*, smoke: bool, out_dir: Path) -> dict:
    if smoke:
        device, dtype, backend, scale = torch.device("cpu"), torch.float32, "torch", SMOKE
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench.gpu_bench needs a CUDA GPU (none is visible here); "
                             "use --smoke to exercise the code paths on the CPU.")
        device, dtype, backend, scale = torch.device("cuda"), torch.bfloat16, "triton", FULL
    timer = Timer(device, quick=smoke)
    results: dict = {
        "mode": "smoke (CPU, torch backends; not figures)" if smoke else "full",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": versions(),
        "scale": asdict(scale),
    }
    results["bandwidth"] = device_bandwidth(scale, device, timer)
    print(f"bandwidth: {results['bandwidth']['gb_per_s']:.0f} GB/s", flush=True)
    results["model"], model, experts = model_level(scale, device, dtype, timer, backend)
    print("model:", json.dumps({k: round(v, 4) for k, v in results["model"].items() if isinstance(v, float)}), flush=True)
    results["projections"] = projection_level(
        scale, device, dtype, timer, backend, None if smoke else results["bandwidth"]["gb_per_s"]
    )
    print(f"projections: {len(results['projections'])} rows", flush=True)
    results["mixture"] = mixture_level(scale, device, timer, "torch" if smoke else "triton")
    results["end_to_end"] = end_to_end(scale, model, experts, device, dtype, backend)
    results["goals"] = goals(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    report = markdown(results)
    (out_dir / "gpu.md").write_text(report)
    print(report)
    print(f"written: {out_dir / 'gpu.json'}, {out_dir / 'gpu.md'}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU with the torch backends")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default bench/results; a temporary directory with --smoke)")
    args = parser.parse_args(argv)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="gpu_bench_smoke_")) if args.smoke
                           else Path(__file__).resolve().parent / "results")
    run(smoke=args.smoke, out_dir=out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
