"""A tiny world to compose in: a character tokenizer and a small Llama, built locally (no download).

`build_char_tokenizer` gives one token per character (printable ASCII and newline) plus
<pad>, <bos>, <eos>, <unk>; encoding adds <bos>; decoding concatenates characters, so
encode -> decode round-trips any printable text (even text that spells a special token: special
tokens are never read from text).
`build_base_model` saves a seeded LlamaForCausalLM (untrained unless train_steps > 0) and the
tokenizer into a directory that transformers, peft and the engines load with from_pretrained.
"""
from __future__ import annotations

import random
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
CHARACTERS = [chr(code) for code in range(32, 127)] + ["\n"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_char_tokenizer(directory: str | Path | None = None) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
        split_special_tokens=True,  # text that spells "<eos>" is read as characters, never as the token
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if directory is not None:
        tokenizer.save_pretrained(str(directory))
    return tokenizer


def random_corpus(*, count: int, length: int, seed: int) -> list[str]:
    """Random printable strings covering the whole character vocabulary."""
    rng = random.Random(seed)
    alphabet = string.printable[:95].replace("\t", "") + "\n"
    return ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(count)]


def build_base_model(
    directory: str | Path,
    *,
    layers: int = 4,
    hidden: int = 128,
    seed: int = 0,
    train_steps: int = 0,
    corpus: list[str] | None = None,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
) -> Path:
    """Build, optionally pretrain on `corpus` (next-character prediction), and save a small Llama.

    Returns the directory. Deterministic for a given seed, corpus and step count."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_char_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        num_key_value_heads=max(1, hidden // 32),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.05,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if train_steps > 0:
        texts = corpus if corpus else random_corpus(count=256, length=48, seed=seed)
        train_causal_lm(
            model,
            tokenizer,
            texts,
            steps=train_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
        )
    model.eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def train_causal_lm(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    loss_from: list[int] | None = None,
) -> float:
    """Next-token training on `texts` (each followed by <eos>); returns the last loss.

    `loss_from[i]`, when given, is the character offset in texts[i] before which no loss is taken
    (the prompt), so the model learns only the answer."""
    generator = torch.Generator().manual_seed(seed)
    encoded = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    masks = []
    for index, ids in enumerate(encoded):
        start = 1 + (loss_from[index] if loss_from else 0)  # +1 for <bos>
        masks.append([0] * start + [1] * (len(ids) - start))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.1, 1 - step / max(1, steps))
    )
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        picks = torch.randint(len(encoded), (min(batch_size, len(encoded)),), generator=generator).tolist()
        width = max(len(encoded[i]) for i in picks)
        input_ids = torch.full((len(picks), width), tokenizer.pad_token_id)
        labels = torch.full((len(picks), width), -100)
        attention = torch.zeros((len(picks), width), dtype=torch.long)
        for row, i in enumerate(picks):
            ids = torch.tensor(encoded[i])
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
            keep = torch.tensor(masks[i], dtype=torch.bool)
            labels[row, : len(ids)] = torch.where(keep, ids, torch.tensor(-100))
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value
