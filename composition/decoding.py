"""Decoding helpers every engine's per-token step shares: penalties, log-probability bookkeeping, and the JSON
constraint (structured outputs and tool calls).

All of them act on one request's next-token log-probabilities under its mixture, log p [vocab], so every engine
and every strategy that decodes through `composition.engine.DecodeState` applies them alike:

- `penalised_scores`: OpenAI's presence and frequency penalties and logit_bias, applied to log p (a constant
  shift per step, so the same as applying them to the logits): score[j] = log p[j] − count[j]·frequency
  − [count[j] > 0]·presence + bias[j], where count[j] is how often token j was generated so far.
- `TokenLogprob` / `top_alternatives`: what a request that asks for logprobs gets back per token: the chosen
  token's log p under the mixture (before penalties, bias, constraint, temperature and top-p, as vLLM reports
  them) and the `top_logprobs` most likely tokens of that same distribution.
- `JsonConstraint`: constrained decoding with llguidance (Microsoft's maintained grammar engine, a Rust wheel
  with no dependencies): a JSON schema (or "any JSON object") compiled once per schema into a grammar and
  cached; per step it masks every token that cannot continue a valid document, so an answer that ends on an
  end token always parses (and matches the schema). The mask applies to the mixed distribution.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from composition.errors import CompositionError
from composition.grammars import json_grammar

@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, log p), most likely first


def penalised_scores(logprobs: torch.Tensor, generated: list[int], *, presence: float = 0.0,
                     frequency: float = 0.0, logit_bias: dict[int, float] | None = None) -> torch.Tensor:
    """The scores decoding picks from: log p [vocab] with OpenAI's penalties and bias applied."""
    if not (presence or frequency or logit_bias):
        return logprobs
    scores = logprobs.float().clone()
    if generated and (presence or frequency):
        counts = torch.bincount(torch.tensor(generated, dtype=torch.long), minlength=scores.shape[-1])
        counts = counts[: scores.shape[-1]].to(scores.device, torch.float32)
        scores -= counts * frequency + (counts > 0).float() * presence
    for token, bias in (logit_bias or {}).items():
        if 0 <= token < scores.shape[-1]:
            scores[token] += bias
    return scores


def top_alternatives(logprobs: torch.Tensor, count: int) -> list[tuple[int, float]]:
    if count <= 0:
        return []
    values, tokens = torch.topk(logprobs.float(), min(count, logprobs.shape[-1]))
    return list(zip(tokens.tolist(), values.tolist()))


# --- token bytes -------------------------------------------------------------------------------------------


class _TokenizerBytes:
    """What llguidance needs to know of a tokenizer it cannot read itself (e.g. the toy world's character
    tokenizer): each token's bytes, and which tokens are special."""

    def __init__(self, tokenizer):
        special = set(tokenizer.all_special_ids)
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = sorted(special)
        self.tokens = [
            b"\xff" + str(tokenizer.convert_ids_to_tokens(i)).encode() if i in special
            else tokenizer.decode([i]).encode()
            for i in range(len(tokenizer))
        ]
        self._tokenizer = tokenizer

    def __call__(self, text):
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]


_tokenizers: dict[int, tuple[object, object]] = {}
_tokenizers_lock = threading.Lock()


def grammar_tokenizer(tokenizer):
    """llguidance's view of a transformers tokenizer, built once per tokenizer (about a second for 50k tokens)."""
    import llguidance
    import llguidance.hf

    from composition.engine import end_token_ids

    with _tokenizers_lock:
        known = _tokenizers.get(id(tokenizer))
        if known is not None and known[0] is tokenizer:
            return known[1]
        eos = sorted(end_token_ids(tokenizer)) or None
        try:
            built = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=eos)
        except (ValueError, TypeError):  # a decoder llguidance does not know: hand it every token's bytes
            built = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_TokenizerBytes(tokenizer)),
                                           n_vocab=len(tokenizer), eos_token=eos)
        _tokenizers[id(tokenizer)] = (tokenizer, built)
        return built


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The bytes a token stands for (a byte-level BPE token may hold part of a UTF-8 character)."""
    if token_id >= len(tokenizer) or token_id in tokenizer.all_special_ids:
        return tokenizer.decode([token_id]).encode()
    return grammar_tokenizer(tokenizer).decode_bytes([token_id])


def token_entry(tokenizer, token_id: int, logprob: float) -> dict:
    """One token as OpenAI's chat logprobs show it: token (text), logprob and bytes (a list of integers)."""
    raw = token_bytes(tokenizer, token_id)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def logprob_entries(tokenizer, tokens: list[TokenLogprob]) -> list[dict]:
    """OpenAI's chat `logprobs.content`: each token with its `top_logprobs`."""
    return [
        {**token_entry(tokenizer, entry.token_id, entry.logprob),
         "top_logprobs": [token_entry(tokenizer, token, value) for token, value in entry.top]}
        for entry in tokens
    ]


# --- the JSON constraint -----------------------------------------------------------------------------------


class JsonConstraint:
    """One request's progress through a JSON grammar: which tokens may come next, and the tokens taken."""

    def __init__(self, schema: dict | None, tokenizer):
        import llguidance

        self.tokenizer = tokenizer
        self.matcher = llguidance.LLMatcher(grammar_tokenizer(tokenizer), json_grammar(schema))
        if self.matcher.is_error():
            raise CompositionError(f"the JSON schema cannot be used for constrained decoding: "
                                   f"{self.matcher.get_error()}")

    def allowed(self, vocab_size: int) -> torch.Tensor:
        """A boolean mask [vocab_size] of the tokens that keep the document valid (end tokens once complete)."""
        if self.matcher.is_error():
            raise CompositionError(f"constrained decoding failed: {self.matcher.get_error()}")
        words = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.int32)
        bits = (words.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        mask = bits.flatten().bool()
        if mask.shape[0] < vocab_size:
            mask = torch.cat([mask, mask.new_zeros(vocab_size - mask.shape[0])])
        return mask[:vocab_size]

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise CompositionError(f"constrained decoding failed: {self.matcher.get_error()}")


def constrained_scores(scores: torch.Tensor, constraint: JsonConstraint | None) -> torch.Tensor:
    if constraint is None:
        return scores
    return scores.masked_fill(~constraint.allowed(scores.shape[-1]).to(scores.device), float("-inf"))


def prompt_token_logprobs(engine, prompt: str, mixture: dict[str, float], top: int
                          ) -> list[tuple[int, TokenLogprob | None]]:
    """Each prompt token (as the tokenizer reads the prompt, without special tokens) with its log p under the
    mixture given the tokens before it, and the `top` most likely tokens there; None for a first token that
    nothing precedes (a tokenizer that adds no <bos>). Each prefix is decoded to text for the engine, which
    reads it back as the same tokens for tokenizers that round-trip text."""
    from composition.engine import GenerationRequest

    tokenizer = engine.tokenizer
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    first_scored = 0 if tokenizer("")["input_ids"] else 1
    prefixes = [tokenizer.decode(ids[:position]) for position in range(first_scored, len(ids))]
    rows = engine.next_token_logits([GenerationRequest(prompt=text, mixture=mixture) for text in prefixes]) \
        if prefixes else torch.empty(0)
    entries: list[tuple[int, TokenLogprob | None]] = [(token, None) for token in ids[:first_scored]]
    for row, token in zip(rows, ids[first_scored:]):
        row = torch.log_softmax(row.float(), dim=-1)
        entries.append((token, TokenLogprob(token, float(row[token]), top_alternatives(row, top))))
    return entries


def prompt_logprob_entries(engine, prompt: str, mixture: dict[str, float], top: int) -> list[dict]:
    """`prompt_token_logprobs` in the shape of `logprob_entries` (logprob and top_logprobs None where unscored)."""
    tokenizer = engine.tokenizer
    entries = []
    for token, scored in prompt_token_logprobs(engine, prompt, mixture, top):
        if scored is None:
            entries.append({**token_entry(tokenizer, token, None), "top_logprobs": None})
        else:
            entries.extend(logprob_entries(tokenizer, [scored]))
    return entries
