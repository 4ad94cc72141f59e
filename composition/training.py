"""Training a LoRA expert on a chat model, cached by its recipe.

An expert learns from (user message, exact reply) pairs. Each pair is rendered with the base model's own
chat template, exactly as a chat request is rendered when served, and the reply is followed by the
template's end-of-turn token (so the expert learns to stop); the loss is taken on the reply's tokens only.

Cost on the CPU: LoRA goes on the top `layers` decoder layers only. The frozen layers below never change, so
their output for each training example is computed once, before training (`frozen_prefix_states`); each
step then runs the top layers forward and backward, and the output head only at the reply's positions.

`ensure_adapter(cache_dir, base_dir, recipe, items)` trains once per recipe: the adapter lives in
cache_dir/<recipe hash>/, where the hash covers the recipe, the training items and the base model's weights;
a second call with the same recipe finds it and trains nothing.

Pure torch, transformers and peft: no Django.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

RECIPE_VERSION = "chat-lora-1"  # bump when the training code changes what a recipe produces
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides what an adapter becomes (besides the items and the base weights)."""

    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ALL_PROJECTIONS
    layers: int = 12                # LoRA on the top `layers` decoder layers
    steps: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-3
    warmup_steps: int = 5
    seed: int = 0


def configure_threads() -> int:
    """Use every core this process may run on, unless one thread is faster now; returns the thread count.

    On a machine whose cores other processes keep busy, threads that wait for each other at every operation
    run many times slower than one thread (measured here: a training step took 11 s on one thread and 80 s
    on two while other jobs loaded both cores), so a short matrix-product probe picks between them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores == 1:
        torch.set_num_threads(1)
        return 1
    x = torch.randn(384, 384)

    def probe(threads: int) -> float:
        torch.set_num_threads(threads)
        started = time.perf_counter()
        for _ in range(8):
            x @ x
        return time.perf_counter() - started

    probe(cores)  # warm-up
    threads = min((cores, 1), key=probe)
    torch.set_num_threads(threads)
    return threads


class ThreadWatch:
    """Probes the thread count again when steps slow down: the load that `configure_threads` saw at the start
    can change during a long run, and two threads on two busy cores run many times slower than one."""

    WINDOW = 10      # steps per comparison
    SLOWDOWN = 2.0   # a window this many times slower than the fastest one so far triggers a new probe

    def __init__(self, threads: int):
        self.threads = threads
        self._window: list[float] = []
        self._fastest = float("inf")

    def step_took(self, seconds: float) -> None:
        self._window.append(seconds)
        if len(self._window) < self.WINDOW:
            return
        typical = sorted(self._window)[len(self._window) // 2]
        self._window.clear()
        if typical > self.SLOWDOWN * self._fastest:
            self.threads = configure_threads()
            self._fastest = float("inf")  # the new thread count starts its own record
        else:
            self._fastest = min(self._fastest, typical)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def base_weights_sha256(base_dir: str | Path) -> str:
    """The base model's content: the sha256 of its safetensors files, in name order."""
    files = sorted(Path(base_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{base_dir} holds no *.safetensors weights")
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()


def recipe_hash(recipe: Recipe, pairs: Sequence[tuple[str, str]], base_sha256: str) -> str:
    """The cache key of an adapter: recipe, training pairs (in order) and base weights."""
    document = {
        "version": RECIPE_VERSION,
        "recipe": dataclasses.asdict(recipe),
        "pairs": [list(pair) for pair in pairs],
        "base_sha256": base_sha256,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:24]


def chat_prompt(tokenizer, message: str) -> str:
    """The served form of a one-message chat: the base model's template with the assistant's turn opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)


def end_of_turn_token_id(tokenizer) -> int:
    return tokenizer.eos_token_id


def encode_pair(tokenizer, message: str, reply: str) -> tuple[list[int], int]:
    """Token ids of prompt + reply + end-of-turn, and where the reply starts."""
    prompt_ids = tokenizer(chat_prompt(tokenizer, message))["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [end_of_turn_token_id(tokenizer)]
    return prompt_ids + reply_ids, len(prompt_ids)


def split_at(model, layers: int) -> int:
    """Index of the first decoder layer that gets LoRA."""
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"layers must be between 1 and {total}, got {layers}")
    return total - layers


@torch.no_grad()
def frozen_prefix_states(model, batch: dict, first_trained: int) -> torch.Tensor:
    """The hidden states entering decoder layer `first_trained` (the frozen layers' output), [b, t, hidden]."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True, use_cache=False)
    return outputs.hidden_states[first_trained]


def pad_batch(encoded: list[tuple[list[int], int]], pad_id: int) -> dict:
    """Right-padded input ids, attention mask and labels (-100 outside the replies)."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100)
    for row, (ids, reply_start) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, reply_start: len(ids)] = torch.tensor(ids[reply_start:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class TopLayers(torch.nn.Module):
    """The top decoder layers, the final norm and the output head of a causal LM, run from given hidden
    states. Uses only what transformers' decoder-only models share: `get_decoder()` with `.layers`,
    `.norm` and `.rotary_emb`, and `get_output_embeddings()`."""

    def __init__(self, model, first_trained: int):
        super().__init__()
        decoder = model.get_decoder()
        self.config = model.config
        self.layers = decoder.layers[first_trained:]
        self.norm = decoder.norm
        self.rotary = decoder.rotary_emb
        self.head = model.get_output_embeddings()

    def loss(self, hidden: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(hidden.shape[1])[None, :].expand(hidden.shape[0], -1)
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention,
                                  past_key_values=None, position_ids=positions)
        position_embeddings = self.rotary(hidden, positions)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions,
                           position_embeddings=position_embeddings)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        hidden = self.norm(hidden)
        # position p predicts token p + 1: only positions whose next token is a reply token need the head
        targets = labels[:, 1:]
        picked = targets != -100
        logits = self.head(hidden[:, :-1][picked]).float()
        return torch.nn.functional.cross_entropy(logits, targets[picked])


def _stage(progress, description: str, *, total: int, unit: str):
    """A stage of `progress`; composition imports nothing of the project, so "nobody watches" is spelled here."""
    if progress is None:
        return contextlib.nullcontext(_Unwatched())
    return progress.stage(description, total=total, unit=unit)


class _Unwatched:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass


def train_adapter(base_dir: str | Path, pairs: Sequence[tuple[str, str]], recipe: Recipe, out_dir: str | Path,
                  *, description: str = "training", progress=None) -> dict:
    """Train a LoRA on (message, reply) pairs and save it as a peft adapter directory in out_dir.

    `progress` (a mosaic.progress.Progress, or anything with its `stage`) is told of each step; None: nobody.
    Returns facts about the run: seconds, final loss, trainable parameters, threads."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    thread_watch = ThreadWatch(configure_threads())
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    first_trained = split_at(model, recipe.layers)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_token_id(tokenizer)

    encoded = [encode_pair(tokenizer, message, reply) for message, reply in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths pad little
    prefix_states: list[torch.Tensor] = [None] * len(encoded)  # type: ignore[list-item]
    chunk = 32
    with _stage(progress, f"{description}: frozen layers", total=len(order), unit="example") as step:
        for start in range(0, len(order), chunk):
            indices = order[start: start + chunk]
            batch = pad_batch([encoded[i] for i in indices], pad_id)
            states = frozen_prefix_states(model, batch, first_trained)
            for row, i in enumerate(indices):
                prefix_states[i] = states[row, : len(encoded[i][0])].clone()
            step.update(len(indices))

    prefix_seconds = time.monotonic() - started
    lora = LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=list(recipe.target_modules),
                      layers_to_transform=list(range(first_trained, model.config.num_hidden_layers)))
    peft_model = get_peft_model(model, lora)
    top = TopLayers(peft_model.get_base_model(), first_trained)
    parameters = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, recipe.warmup_steps))
        * max(0.05, 1 - step / max(1, recipe.steps)))
    generator = torch.Generator().manual_seed(recipe.seed)
    peft_model.train()
    loss_value = float("nan")
    with _stage(progress, description, total=recipe.steps, unit="step") as step:
        for _ in range(recipe.steps):
            step_started = time.perf_counter()
            picks = torch.randint(len(encoded), (min(recipe.batch_size, len(encoded)),), generator=generator).tolist()
            batch = pad_batch([encoded[i] for i in picks], pad_id)
            hidden = torch.zeros(len(picks), batch["input_ids"].shape[1], model.config.hidden_size)
            for row, i in enumerate(picks):
                hidden[row, : prefix_states[i].shape[0]] = prefix_states[i]
            loss = top.loss(hidden, batch["attention_mask"], batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            loss_value = float(loss.detach())
            step.set_postfix(loss=f"{loss_value:.3f}")
            step.update()
            thread_watch.step_took(time.perf_counter() - step_started)
    peft_model.eval()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    return {
        "seconds": round(time.monotonic() - started, 1),
        "setup_seconds": round(prefix_seconds, 1),
        "final_loss": round(loss_value, 4),
        "trainable_parameters": sum(p.numel() for p in parameters),
        "threads": thread_watch.threads,
    }


def ensure_adapter(cache_dir: str | Path, base_dir: str | Path, recipe: Recipe,
                   pairs: Sequence[tuple[str, str]], *, description: str = "training",
                   progress=None, base_sha256: str | None = None) -> tuple[Path, dict | None]:
    """The adapter for this recipe, trained now only if the cache does not hold it.

    Returns (adapter directory, training facts or None when it came from the cache). The directory appears
    whole or not at all (trained beside it, then renamed), so an interrupted run leaves no half adapter."""
    key = recipe_hash(recipe, pairs, base_sha256 or base_weights_sha256(base_dir))
    target = Path(cache_dir) / key
    if (target / "adapter_model.safetensors").is_file():
        return target, None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        facts = train_adapter(base_dir, pairs, recipe, staging, description=description, progress=progress)
        (staging / "training.json").write_text(json.dumps(
            {"recipe": dataclasses.asdict(recipe), "pairs": len(pairs), **facts}, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, facts


@torch.no_grad()
def greedy_replies(model, tokenizer, messages: Sequence[str], max_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy replies to one-message chats, batched with left padding; stops at end of turn."""
    replies = []
    for start in range(0, len(messages), batch_size):
        prompts = [chat_prompt(tokenizer, message) for message in messages[start: start + batch_size]]
        encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
        width = max(len(ids) for ids in encoded)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_token_id(tokenizer)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        output = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_tokens,
                                do_sample=False, eos_token_id=end_of_turn_token_id(tokenizer), pad_token_id=pad_id)
        replies.extend(tokenizer.decode(row[width:], skip_special_tokens=True) for row in output)
    return replies


# --- the demo's experts ------------------------------------------------------------------------------------

# Distinct training items per skill (composition.skills, seed 0). The adder needs many: trained on 128 items
# seen 12 times each it memorised them and got 5 of 8 held-out sums right; on 1,600 items seen once each,
# 36 of 40 (the misses are carries into the tens).
DEMO_TRAIN_ITEMS = {"add": 1600, "reverse": 128, "convert": 128, "extract": 128, "sentiment": 128}
DEMO_STEPS = {"add": 200, "reverse": 50, "convert": 50, "extract": 50, "sentiment": 50}


def demo_recipe(skill: str) -> Recipe:
    """The recipe of a demo expert on SmolLM2-135M-Instruct. Every expert adapts the same modules of the same
    layers, so they can be merged."""
    return Recipe(rank=8, alpha=16, target_modules=ALL_PROJECTIONS, layers=12, steps=DEMO_STEPS[skill],
                  batch_size=8, learning_rate=3e-3, warmup_steps=5, seed=0)


def toy_recipe() -> Recipe:
    """Two optimisation steps on the toy world's tiny base (for tests of the seeding, not of the skills)."""
    return Recipe(rank=2, alpha=4, target_modules=("q_proj", "v_proj"), layers=1, steps=2, batch_size=2)


def demo_training_pairs(skill: str, *, toy: bool = False) -> list[tuple[str, str]]:
    from composition.skills import SKILLS

    items = SKILLS[skill].train_items(4 if toy else DEMO_TRAIN_ITEMS[skill], seed=0)
    return [(item.prompt, item.answer) for item in items]


# --- the monolith: the centralised alternative to the demo's experts --------------------------------------

def monolith_recipe(recipes: Sequence[Recipe]) -> Recipe:
    """One LoRA with the rank and the training compute of the experts trained by `recipes` together: their
    ranks summed, their optimisation steps summed (the same batch size, so as many training examples seen),
    the same alpha-to-rank ratio, modules, layers, learning rate and warm-up. Per step it costs what an
    expert's step costs up to the adapters' own products, small beside the layers they run through."""
    if not recipes:
        raise ValueError("a monolith needs at least one expert's recipe")
    first = recipes[0]
    for recipe in recipes[1:]:
        if ((recipe.batch_size, recipe.learning_rate, recipe.layers, recipe.target_modules, recipe.warmup_steps,
             recipe.alpha * first.rank) != (first.batch_size, first.learning_rate, first.layers,
                                            first.target_modules, first.warmup_steps, first.alpha * recipe.rank)):
            raise ValueError("the experts' recipes differ beyond rank and steps; no one monolith matches them all")
    rank = sum(recipe.rank for recipe in recipes)
    return dataclasses.replace(first, rank=rank, alpha=first.alpha * rank // first.rank,
                               steps=sum(recipe.steps for recipe in recipes))


def monolith_training_pairs(skills: Sequence[str], *, toy: bool = False) -> list[tuple[str, str]]:
    """The union of every contributor's training pairs, skill after skill (training draws its batches at
    random, so the order changes nothing but the cache key)."""
    return [pair for skill in skills for pair in demo_training_pairs(skill, toy=toy)]
