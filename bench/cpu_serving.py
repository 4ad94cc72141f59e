"""CPU serving benchmark (issue 10): the real base model with many experts at once, side by side in one run.

    python -m bench.cpu_serving              # SmolLM2-135M-Instruct, 8 and 16 concurrent requests
    python -m bench.cpu_serving --smoke      # a tiny random Llama: checks every code path in seconds
    python -m bench.cpu_serving --threads 1  # on a machine whose cores are busy with other work

Every request uses its own expert: a peft LoRA (r=8 on q,k,v,o,gate,up,down of every layer, lora_B filled
with seeded random values so the delta is real), saved with save_pretrained and loaded back from disk by each
contender. Greedy decoding, 32 new tokens, float32, prompts rendered with the model's chat template.

Contenders, timed in interleaved rounds (the median round is reported; the best is in the JSON):
  - base: the base model alone, transformers' generate on the left-padded batch (no adapters);
  - peft: PeftModel.generate with adapter_names=[one expert per row] (peft's mixed batch);
  - mosaic: MosaicEngine.generate, each request's mixture naming its expert;
  - mosaic_no_adapters: the same engine with empty mixtures (the engine's own overhead).
tokens/s counts the tokens each request generated (up to and including <eos>), over the wall time of the call.
Each call's process CPU time is recorded too: with one torch thread on a machine whose cores other work keeps
busy, the ratio of CPU times is the steady measure (wall time then mostly measures the other work); with
several threads it also counts threads spinning at barriers, so read it with the wall-time ratio.
Mosaic's greedy text is checked against peft's for the same expert.
Prints a table; writes bench/results/cpu_serving.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GOAL_RATIO = 0.85  # Mosaic with 8 mixed experts / the base model alone
LORA_B_STD = 0.02

QUESTIONS = [
    "Explain how a bicycle works, step by step.",
    "Write a short story about a lighthouse keeper.",
    "Describe the water cycle in detail.",
    "What are the main causes of the French Revolution?",
    "Give me a recipe for a vegetable soup.",
    "Explain photosynthesis to a ten year old.",
    "Write a letter to a friend about your holiday.",
    "Describe how to plant a tree.",
    "What is machine learning? Explain with examples.",
    "Tell me about the history of the printing press.",
    "How do airplanes stay in the air?",
    "Write a poem about the sea at night.",
    "Explain why the sky is blue.",
    "Describe a day in the life of a farmer.",
    "What should I pack for a week of hiking?",
    "Explain how vaccines train the immune system.",
]


def default_model_dir() -> Path:
    from gpu_workers.model_import import ensure_default_base_model

    return ensure_default_base_model(os.environ.get("BASE_MODEL_DIR") or "var/base_models")


def build_smoke_model(directory: Path) -> Path:
    from tests.helpers import build_tiny_base

    return build_tiny_base(directory)


def save_experts(model_dir: Path, directory: Path, count: int, rank: int, seed: int = 0) -> list[tuple[str, Path]]:
    """`count` peft LoRA adapters on every projection, saved as adapter directories; [(name, path)]."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                        task_type="CAUSAL_LM")
    names = [f"expert_{index:02d}" for index in range(count)]
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * LORA_B_STD)
    experts = []
    for name in names:
        peft_model.save_pretrained(str(directory / "saved"), selected_adapters=[name], safe_serialization=True)
        found = [path.parent for path in (directory / "saved").rglob("adapter_config.json")
                 if path.parent.name == name]
        target = directory / name
        found[0].rename(target)
        experts.append((name, target))
    return experts


def prompts_for(tokenizer, count: int) -> list[str]:
    questions = [QUESTIONS[index % len(QUESTIONS)] for index in range(count)]
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                              add_generation_prompt=True) for question in questions]
    return [f"{question}\n" for question in questions]


def generated_counts_and_texts(tokenizer, output: torch.Tensor, width: int) -> tuple[int, list[str]]:
    """Tokens each row generated (through its first <eos>), and the decoded texts."""
    total, texts = 0, []
    for row in output[:, width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        total += len(row)
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return total, texts


class Contenders:
    """The four ways of serving one batch of requests; each call returns (generated tokens, texts)."""

    def __init__(self, model_dir: Path, experts: list[tuple[str, Path]], lora_backend: str):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from composition.experts import adapter_content_sha256
        from gpu_workers.engine import MosaicEngine

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        peft_base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        (first, first_path), rest = experts[0], experts[1:]
        self.peft = PeftModel.from_pretrained(peft_base, str(first_path), adapter_name=first).eval()
        for name, path in rest:
            self.peft.load_adapter(str(path), adapter_name=name)
        self.mosaic = MosaicEngine(model_dir, device="cpu", dtype=torch.float32, lora_backend=lora_backend)
        for name, path in experts:
            self.mosaic.register_adapter(name, str(path), adapter_content_sha256(path))

    def _batch(self, prompts):
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)

    @torch.inference_mode()
    def base_model(self, prompts, names, tokens):
        batch = self._batch(prompts)
        output = self.base.generate(**batch, max_new_tokens=tokens, do_sample=False,
                                    pad_token_id=self.tokenizer.pad_token_id)
        return generated_counts_and_texts(self.tokenizer, output, batch["input_ids"].shape[1])

    @torch.inference_mode()
    def peft_mixed(self, prompts, names, tokens):
        batch = self._batch(prompts)
        output = self.peft.generate(**batch, adapter_names=list(names), max_new_tokens=tokens, do_sample=False,
                                    pad_token_id=self.tokenizer.pad_token_id)
        return generated_counts_and_texts(self.tokenizer, output, batch["input_ids"].shape[1])

    def _mosaic(self, prompts, mixtures, tokens):
        from composition.engine import GenerationRequest

        results = self.mosaic.generate([GenerationRequest(prompt=prompt, mixture=mixture, max_tokens=tokens)
                                        for prompt, mixture in zip(prompts, mixtures)])
        return sum(result.completion_tokens for result in results), [result.text for result in results]

    def mosaic_mixed(self, prompts, names, tokens):
        return self._mosaic(prompts, [{name: 1.0} for name in names], tokens)

    def mosaic_no_adapters(self, prompts, names, tokens):
        return self._mosaic(prompts, [{} for _ in names], tokens)


CONTENDERS = {
    "base": ("base model alone (transformers generate)", "base_model"),
    "peft": ("peft, mixed batch (adapter_names)", "peft_mixed"),
    "mosaic": ("Mosaic's engine, mixed batch", "mosaic_mixed"),
    "mosaic_no_adapters": ("Mosaic's engine, no adapters", "mosaic_no_adapters"),
}


def run_size(contenders: Contenders, experts, size: int, tokens: int, rounds: int) -> dict:
    prompts = prompts_for(contenders.tokenizer, size)
    names = [experts[index % len(experts)][0] for index in range(size)]
    for _, method in CONTENDERS.values():  # warm-up: first calls allocate and pick kernels
        getattr(contenders, method)(prompts, names, min(tokens, 4))
    seconds = {key: [] for key in CONTENDERS}
    cpu_seconds = {key: [] for key in CONTENDERS}
    generated, texts = {}, {}
    for _ in range(rounds):
        for key, (_, method) in CONTENDERS.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            generated[key], texts[key] = getattr(contenders, method)(prompts, names, tokens)
            seconds[key].append(time.perf_counter() - started)
            cpu_seconds[key].append(time.process_time() - cpu_started)
    rows = {}
    for key in CONTENDERS:
        median = statistics.median(seconds[key])
        rows[key] = {
            "tokens": generated[key],
            "seconds": seconds[key],
            "tokens_per_s": generated[key] / median,
            "best_tokens_per_s": generated[key] / min(seconds[key]),
            "cpu_seconds": cpu_seconds[key],
            "tokens_per_cpu_s": generated[key] / statistics.median(cpu_seconds[key]),
        }
    for key in CONTENDERS:
        rows[key]["ratio_to_base"] = rows[key]["tokens_per_s"] / rows["base"]["tokens_per_s"]
        rows[key]["cpu_ratio_to_base"] = rows[key]["tokens_per_cpu_s"] / rows["base"]["tokens_per_cpu_s"]
    agree = sum(mine == theirs for mine, theirs in zip(texts["mosaic"], texts["peft"]))
    changed = sum(expert != base for expert, base in zip(texts["peft"], texts["base"]))
    return {
        "requests": size,
        "distinct_experts": len(set(names)),
        "contenders": rows,
        "mosaic_vs_peft_ratio": rows["mosaic"]["tokens_per_s"] / rows["peft"]["tokens_per_s"],
        "greedy_texts_equal_to_peft": agree,
        "experts_change_the_text": changed,
        "mosaic_no_adapters_equal_to_base": sum(m == b for m, b in zip(texts["mosaic_no_adapters"], texts["base"])),
        "example": {"prompt": prompts[0], "base": texts["base"][0], "expert": texts["mosaic"][0]},
    }


def markdown(results: dict) -> str:
    lines = [
        "# CPU serving: Mosaic's engine vs peft's mixed batch vs the base model alone",
        "",
        f"Model `{results['model']}` ({results['dtype']}), LoRA r={results['rank']} on {', '.join(TARGETS)} of "
        f"every layer, one expert per request, greedy, {results['new_tokens']} new tokens; median of "
        f"{results['rounds']} interleaved rounds. Machine: {results['machine']['processor']}, "
        f"{results['machine']['cpus']} CPUs, torch threads {results['machine']['torch_threads']}, load average "
        f"{results['machine']['load_average_before']} before / {results['machine']['load_average_after']} after; "
        f"torch {results['machine']['torch']}; Mosaic LoRA backend `{results['lora_backend']}`.",
        "",
    ]
    for size in results["sizes"]:
        lines += [
            f"## {size['requests']} concurrent requests, {size['distinct_experts']} experts",
            "",
            "| | tokens | tokens/s | best tokens/s | ratio to base | tokens per CPU-second | ratio to base by CPU time |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, (label, _) in CONTENDERS.items():
            row = size["contenders"][key]
            lines.append(f"| {label} | {row['tokens']} | {row['tokens_per_s']:.1f} | {row['best_tokens_per_s']:.1f} "
                         f"| {row['ratio_to_base']:.2f} | {row['tokens_per_cpu_s']:.1f} | {row['cpu_ratio_to_base']:.2f} |")
        lines += [
            "",
            f"Mosaic / peft: {size['mosaic_vs_peft_ratio']:.2f}. Greedy texts equal to peft's for the same expert: "
            f"{size['greedy_texts_equal_to_peft']} of {size['requests']}; the experts change the base model's text "
            f"in {size['experts_change_the_text']} of {size['requests']}; Mosaic without adapters equals the base "
            f"model in {size['mosaic_no_adapters_equal_to_base']} of {size['requests']}.",
            "",
        ]
    eight = next((size for size in results["sizes"] if size["requests"] == 8), None)
    if eight is not None:
        ratio = eight["contenders"]["mosaic"]["ratio_to_base"]
        cpu_ratio = eight["contenders"]["mosaic"]["cpu_ratio_to_base"]
        cpu_vs_peft = eight["contenders"]["mosaic"]["tokens_per_cpu_s"] / eight["contenders"]["peft"]["tokens_per_cpu_s"]
        lines += ["## Goal", "",
                  f"Mosaic with 8 mixed experts ≥ {GOAL_RATIO}× the base model alone: {ratio:.2f}× by wall time "
                  f"({'met' if ratio >= GOAL_RATIO else 'not met'}), {cpu_ratio:.2f}× by CPU time "
                  f"({'met' if cpu_ratio >= GOAL_RATIO else 'not met'}); Mosaic / peft "
                  f"{eight['mosaic_vs_peft_ratio']:.2f}× by wall time, {cpu_vs_peft:.2f}× by CPU time.",
                  ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny random Llama, 2 rounds of 4 tokens")
    parser.add_argument("--model", help="base model directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--sizes", default="8,16", help="concurrent requests, comma separated")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lora-backend", default="auto", choices=["auto", "torch", "triton"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(size) for size in args.sizes.split(",")]
    tokens, rounds = (4, 2) if args.smoke else (args.tokens, args.rounds)
    load_before = [round(value, 2) for value in os.getloadavg()]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = build_smoke_model(scratch / "base") if args.smoke else Path(args.model or default_model_dir())
        experts = save_experts(model_dir, scratch / "experts", max(sizes), args.rank)
        contenders = Contenders(model_dir, experts, args.lora_backend)
        per_size = []
        for size in sizes:
            per_size.append(run_size(contenders, experts, size, tokens, rounds))
            contenders_row = per_size[-1]["contenders"]
            print(f"{size:>3} requests: " + ", ".join(
                f"{key} {row['tokens_per_s']:.1f} tok/s ({row['ratio_to_base']:.2f})"
                for key, row in contenders_row.items()) + f"; texts equal to peft {per_size[-1]['greedy_texts_equal_to_peft']}"
                  f"/{size}", flush=True)
    results = {
        "mode": "smoke" if args.smoke else "full",
        "model": "tiny random Llama" if args.smoke else model_dir.name,
        "dtype": "float32",
        "rank": args.rank,
        "new_tokens": tokens,
        "rounds": rounds,
        "lora_backend": args.lora_backend,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        },
        "sizes": per_size,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(results)
    (out / "cpu_serving.json").write_text(json.dumps(results, indent=2))
    (out / "cpu_serving.md").write_text(report + "\n")
    print(report)
    return results


if __name__ == "__main__":
    main()
