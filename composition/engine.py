"""The engine protocol that strategies talk to, and the decoding rules every engine follows.

A request names a mixture {expert_id: weight} (empty = the base model alone). Its next-token
distribution is the weighted mixture of each expert's own distribution:

    p(token) = Σ_i w_i · softmax(logits of base + expert_i)

(a mixture of one expert is exactly that expert's adapter; merged adapters are registered as
experts of their own). `next_token_logits` returns log p, i.e. normalised log-probabilities,
[batch, vocab]. Decoding then follows `pick_next_token`: greedy (argmax) when temperature == 0,
otherwise softmax(log p / temperature), nucleus-filtered to top_p, sampled with the request's own
torch.Generator seeded by the request seed. Generation ends on an end token (`end_token_ids`: <eos>, and
an instruct model's end-of-turn tokens such as <|im_end|>) or a stop sequence (finish_reason "stop"; the
stop text is cut off) or after max_tokens (finish_reason "length"). Before picking, `DecodeState.step` applies
a request's presence/frequency penalties and logit_bias and its JSON constraint (composition.decoding) to the
mixed distribution, and records the log-probabilities a request asks for.
"""
from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch

from composition.decoding import (
    JsonConstraint,
    TokenLogprob,
    constrained_scores,
    penalised_scores,
    top_alternatives,
)
from composition.errors import CompositionError, UnconstrainedAnswer
from composition.experts import Expert


MixtureRule = Callable[[str, int], "dict[str, float]"]


@dataclass
class GenerationRequest:
    prompt: str
    mixture: dict[str, float] = field(default_factory=dict)
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # composition.decoding: penalties and bias on what decoding picks, log-probabilities returned per token
    # (None: none; k: the chosen token's and the k most likely), and a JSON constraint (json_output: the
    # answer is a JSON document, matching json_schema when one is given).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None
    json_output: bool = False
    json_schema: dict | None = None
    # A mixture decided per token (a router, a switch): before each token, mixture_rule(prompt + text so far,
    # step) gives the weights of this token's mixture over the experts of `mixture` (each keeps its own KV
    # cache over the same prefix, so a mixture of k experts costs k rows per token, not k passes).
    mixture_rule: MixtureRule | None = field(default=None, compare=False)
    # Where the mixture applies. "distributions" (the rule above): each expert runs on its own row with its own
    # KV cache and the next-token distributions are mixed. "adapters": one row whose LoRA deltas are mixed,
    # W x + Σ_i w_i · s_i B_i A_i x at every projection, with the weights of the token being computed (as
    # X-LoRA and MoLE gate adapters per token); one KV cache, so a mixture of k experts costs one row.
    mixture_space: str = "distributions"


MIXTURE_SPACES = ("distributions", "adapters")


def step_mixture(request: GenerationRequest, members: list[tuple[str | None, float]], text: str, step: int
                 ) -> list[tuple[str | None, float]]:
    """The members' weights for this token: the request's own, or those its mixture_rule gives now."""
    if request.mixture_rule is None:
        return members
    weights = request.mixture_rule(request.prompt + text, step)
    experts = {expert_id for expert_id, _ in members}
    unknown = set(weights) - experts
    if unknown:
        raise CompositionError(f"the mixture rule names experts outside the request's mixture: {sorted(unknown)}")
    normalise_mixture(weights)
    return [(expert_id, float(weights.get(expert_id, 0.0))) for expert_id, _ in members]


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    # log p(token) of each generated token under the request's mixture (before temperature/top-p).
    token_logprobs: list[float] = field(default_factory=list)
    # Per token of the text (end tokens left out) when the request asked for logprobs.
    tokens: list[TokenLogprob] | None = None

    @property
    def mean_logprob(self) -> float:
        if not self.token_logprobs:
            return 0.0
        return sum(self.token_logprobs) / len(self.token_logprobs)


@dataclass
class ScoreRequest:
    """Teacher-forced scoring: log p(continuation | prompt) under a mixture."""

    prompt: str
    continuation: str
    mixture: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    tokenizer: object  # a transformers PreTrainedTokenizerFast (encode prompts / decode tokens)

    def register_expert(self, expert: Expert) -> None: ...

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    def next_token_logits(self, requests: list[GenerationRequest]) -> torch.Tensor: ...

    def embed(self, texts: list[str]) -> torch.Tensor: ...

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]: ...


def normalise_mixture(mixture: dict[str, float], known: set[str] | None = None) -> dict[str, float]:
    """Check a mixture (non-negative weights summing to 1, known experts) and drop zero weights."""
    if not mixture:
        return {}
    for expert_id, weight in mixture.items():
        if known is not None and expert_id not in known:
            raise CompositionError(f"unknown expert {expert_id!r} in mixture")
        if not isinstance(weight, (int, float)) or weight < 0 or weight != weight:
            raise CompositionError(f"mixture weight for {expert_id!r} must be a non-negative number")
    total = sum(mixture.values())
    if abs(total - 1.0) > 1e-4:
        raise CompositionError(f"mixture weights must sum to 1, they sum to {total:.6g}")
    return {expert_id: float(weight) for expert_id, weight in mixture.items() if weight > 0}


def mix_logprobs(logprobs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log Σ_i w_i p_i for stacked log-probabilities [k, vocab] and weights [k] (summing to 1)."""
    return torch.logsumexp(logprobs.float() + torch.log(weights.float()).unsqueeze(-1), dim=0)


def request_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def pick_next_token(
    logprobs: torch.Tensor, *, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """The one decoding rule: logprobs [vocab] (float32, CPU) -> token id."""
    logprobs = logprobs.float().cpu()
    if temperature <= 0:
        return int(torch.argmax(logprobs))
    probabilities = torch.softmax(logprobs / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probabilities, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs >= top_p  # keep the smallest prefix reaching top_p
        drop[0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probabilities = torch.zeros_like(probabilities).scatter(0, order, sorted_probs)
    probabilities = probabilities / probabilities.sum()
    return int(torch.multinomial(probabilities, 1, generator=generator))


def find_stop(text: str, stop: list[str]) -> int | None:
    """Index where the earliest stop sequence starts in text, or None."""
    positions = [text.find(sequence) for sequence in stop if sequence]
    positions = [position for position in positions if position >= 0]
    return min(positions) if positions else None


def check_request(request: GenerationRequest) -> None:
    if request.max_tokens < 1:
        raise CompositionError("max_tokens must be at least 1")
    if request.temperature < 0:
        raise CompositionError("temperature must be >= 0")
    if not 0 < request.top_p <= 1:
        raise CompositionError("top_p must be in (0, 1]")
    if request.logprobs is not None and request.logprobs < 0:
        raise CompositionError("logprobs must be >= 0")
    if request.mixture_space not in MIXTURE_SPACES:
        raise CompositionError(f"mixture_space must be one of {MIXTURE_SPACES}, not {request.mixture_space!r}")


@functools.lru_cache(maxsize=64)
def _generation_config_eos_ids(directory: str) -> frozenset[int]:
    try:
        value = json.loads((Path(directory) / "generation_config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        return frozenset()
    values = value if isinstance(value, list) else [value]
    return frozenset(v for v in values if isinstance(v, int) and not isinstance(v, bool))


def end_token_ids(tokenizer) -> frozenset[int]:
    """The tokens that end a generation: the tokenizer's eos, and every eos id in the generation_config.json of
    the model directory the tokenizer was loaded from (chat models list their end-of-turn tokens there, e.g.
    Qwen2's <|im_end|> beside <|endoftext|>, Llama 3's <|eot_id|>)."""
    ids = _generation_config_eos_ids(str(getattr(tokenizer, "name_or_path", "") or ""))
    return ids | {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else ids


class DecodeState:
    """One request's progress through decoding; shared by every engine so they stop alike."""

    def __init__(self, request: GenerationRequest, tokenizer, prompt_tokens: int):
        self.request = request
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.generator = request_generator(request.seed)
        self.token_ids: list[int] = []
        self.token_logprobs: list[float] = []
        self.finish_reason: str | None = None
        self.text = ""
        self.end_token_ids = end_token_ids(tokenizer)
        self.tokens: list[TokenLogprob] | None = [] if request.logprobs is not None else None
        self.constraint = (JsonConstraint(request.json_schema, tokenizer) if request.json_output else None)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def needs_distribution(self) -> bool:
        """Whether the next token needs the whole distribution; a plain greedy request needs only its argmax
        (see `accept`)."""
        request = self.request
        return bool(request.temperature > 0 or request.presence_penalty or request.frequency_penalty
                    or request.logit_bias or request.logprobs or self.constraint is not None)

    def step(self, logprobs: torch.Tensor) -> int:
        """Pick the next token from this step's log-probabilities [vocab]; update text and state."""
        request = self.request
        scores = penalised_scores(logprobs, self.token_ids, presence=request.presence_penalty,
                                  frequency=request.frequency_penalty, logit_bias=request.logit_bias)
        scores = constrained_scores(scores, self.constraint)
        if self.constraint is not None and not bool(torch.isfinite(scores).any()):
            raise UnconstrainedAnswer("no token that this strategy allows can continue the constrained JSON answer")
        token = pick_next_token(scores, temperature=request.temperature, top_p=request.top_p,
                                generator=self.generator)
        top = top_alternatives(logprobs, request.logprobs or 0) if self.tokens is not None else []
        return self.accept(token, float(logprobs[token]), top)

    def accept(self, token: int, logprob: float, top: list[tuple[int, float]] | None = None) -> int:
        """Take a token already picked by the rule (an engine that knows a greedy request's argmax and its
        log-probability need not hand over the whole distribution); update text and state."""
        self.token_ids.append(token)
        self.token_logprobs.append(logprob)
        if token in self.end_token_ids:
            self.finish_reason = "stop"
            return token
        if self.tokens is not None:
            self.tokens.append(TokenLogprob(token, logprob, list(top or [])))
        if self.constraint is not None:
            self.constraint.advance(token)
        self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        cut = find_stop(self.text, self.request.stop)
        if cut is not None:
            self.text = self.text[:cut]
            self.finish_reason = "stop"
        elif len(self.token_ids) >= self.request.max_tokens:
            self.finish_reason = "length"
        return token

    def result(self) -> Generation:
        return Generation(
            text=self.text,
            finish_reason=self.finish_reason or "length",
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.token_ids),
            token_logprobs=list(self.token_logprobs),
            tokens=None if self.tokens is None else list(self.tokens),
        )


class ReferenceEngine:
    """The oracle engine: transformers + peft, float32 on the CPU, one request at a time.

    Each expert is loaded as a peft LoRA adapter of one PeftModel. A request with one expert runs
    exactly that adapter; a request with several experts runs each adapter (each with its own
    KV cache) and mixes their next-token distributions, p = Σ w_i p_i, as the module docstring
    says. Generation is KV-cached (past_key_values) unless use_cache=False, which recomputes the
    whole sequence at every step (used to check the cache). Embeddings are the base model's final
    hidden states (after the last norm), adapters disabled, averaged over all tokens (<bos> included).
    """

    def __init__(self, base_model_path: str, experts: list[Expert] | None = None, *, use_cache: bool = True):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.base_model_path = str(base_model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_model_path)
        self.base = AutoModelForCausalLM.from_pretrained(self.base_model_path, dtype=torch.float32).eval()
        self.model = None  # the PeftModel, created with the first expert
        self.use_cache = use_cache
        self.experts: dict[str, Expert] = {}
        self.adapter_names: dict[str, str] = {}
        for expert in experts or []:
            self.register_expert(expert)

    def register_expert(self, expert: Expert) -> None:
        import tempfile

        from peft import PeftModel

        if self.experts.get(expert.id) is expert:
            return
        name = self.adapter_names.get(expert.id) or f"expert_{len(self.adapter_names)}"
        with tempfile.TemporaryDirectory() as directory:
            expert.adapter.save(directory)
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, directory, adapter_name=name).eval()
            else:
                if expert.id in self.adapter_names:
                    self.model.delete_adapter(name)
                self.model.load_adapter(directory, adapter_name=name)
        self.experts[expert.id] = expert
        self.adapter_names[expert.id] = name

    def _members(self, mixture: dict[str, float]) -> list[tuple[str | None, float]]:
        mixture = normalise_mixture(mixture, set(self.experts))
        return list(mixture.items()) or [(None, 1.0)]

    def _forward(self, expert_id: str | None, input_ids: torch.Tensor, past=None, *, hidden: bool = False):
        if self.model is None:
            return self.base(input_ids=input_ids, past_key_values=past, use_cache=past is not None,
                             output_hidden_states=hidden)
        if expert_id is None:
            with self.model.disable_adapter():
                return self.model(input_ids=input_ids, past_key_values=past, use_cache=past is not None,
                                  output_hidden_states=hidden)
        self.model.set_adapter(self.adapter_names[expert_id])
        return self.model(input_ids=input_ids, past_key_values=past, use_cache=past is not None,
                          output_hidden_states=hidden)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    @staticmethod
    def _mix(members, logits: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([torch.log_softmax(row.float(), dim=-1) for row in logits])
        return mix_logprobs(stacked, torch.tensor([weight for _, weight in members]))

    @torch.no_grad()
    def next_token_logits(self, requests: list[GenerationRequest]) -> torch.Tensor:
        rows = []
        for request in requests:
            members = self._members(request.mixture)
            ids = torch.tensor([self._encode(request.prompt)])
            rows.append(self._mix(members, [self._forward(e, ids).logits[0, -1] for e, _ in members]))
        return torch.stack(rows)

    @torch.no_grad()
    def generate(self, requests: list[GenerationRequest], on_token=None) -> list[Generation]:
        """`on_token(index, text_so_far)`, when given, is called after each token (streaming)."""
        from transformers import DynamicCache

        results = []
        for index, request in enumerate(requests):
            check_request(request)
            if request.mixture_space == "adapters":
                results.append(self._generate_mixing_adapters(index, request, on_token))
                continue
            members = self._members(request.mixture)
            prompt_ids = self._encode(request.prompt)
            state = DecodeState(request, self.tokenizer, len(prompt_ids))
            sequence = list(prompt_ids)
            caches = [DynamicCache() if self.use_cache else None for _ in members]
            fresh = prompt_ids
            while not state.done:
                logits = []
                for position, (expert_id, _) in enumerate(members):
                    if self.use_cache:
                        output = self._forward(expert_id, torch.tensor([fresh]), caches[position])
                        caches[position] = output.past_key_values
                    else:
                        output = self._forward(expert_id, torch.tensor([sequence]))
                    logits.append(output.logits[0, -1])
                token = state.step(self._mix(step_mixture(request, members, state.text, len(state.token_ids)),
                                             logits))
                sequence.append(token)
                fresh = [token]
                if on_token is not None:
                    on_token(index, state.text)
            results.append(state.result())
        return results

    def _generate_mixing_adapters(self, index: int, request: GenerationRequest, on_token) -> Generation:
        """mixture_space "adapters", written to be obviously right: no KV cache; at every step the whole sequence
        runs through the base model, each adapted projection adding Σ_i w_i[t] · s_i B_i A_i x[t] with the
        weights each position was computed with (the prompt's: those of the first token; a generated token's:
        those of the token that followed it)."""
        members = self._members(request.mixture)
        prompt_ids = self._encode(request.prompt)
        state = DecodeState(request, self.tokenizer, len(prompt_ids))
        position_weights: list[list[float]] = []  # [positions, members]
        sequence = list(prompt_ids)
        while not state.done:
            weights = [w for _e, w in step_mixture(request, members, state.text, len(state.token_ids))]
            position_weights += [weights] * (len(sequence) - len(position_weights))
            logits = self._forward_mixing_adapters(members, torch.tensor([sequence]), torch.tensor(position_weights))
            token = state.step(torch.log_softmax(logits[0, -1].float(), dim=-1))
            sequence.append(token)
            if on_token is not None:
                on_token(index, state.text)
        return state.result()

    def _forward_mixing_adapters(self, members, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Logits of the base model with each member's LoRA delta added per position, weighted by weights [T, k]."""
        base = self.model.get_base_model() if self.model is not None else self.base
        hooks = []
        modules = {name for expert_id, _ in members if expert_id is not None
                   for name in self.experts[expert_id].adapter.modules}

        def hook_for(name):
            def add_delta(_module, inputs, output):
                x = inputs[0][0].float()  # [T, in]
                delta = torch.zeros_like(output[0], dtype=torch.float32)
                for column, (expert_id, _) in enumerate(members):
                    module = self.experts[expert_id].adapter.modules.get(name) if expert_id is not None else None
                    if module is not None:
                        update = (x @ module.A.float().T) @ module.B.float().T * module.scaling
                        delta += weights[:, column, None].float() * update
                return output + delta.to(output.dtype)[None]
            return add_delta

        for name in modules:
            hooks.append(base.get_submodule(name).register_forward_hook(hook_for(name)))
        try:
            if self.model is not None:
                with self.model.disable_adapter():
                    return self.model(input_ids=input_ids, use_cache=False).logits
            return self.base(input_ids=input_ids, use_cache=False).logits
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """log p of each continuation token given the prompt, under the request's mixture."""
        results = []
        for request in requests:
            members = self._members(request.mixture)
            prompt_ids = self._encode(request.prompt)
            continuation = self.tokenizer(request.continuation, add_special_tokens=False)["input_ids"]
            if not continuation:
                results.append([])
                continue
            ids = torch.tensor([prompt_ids + continuation])
            outputs = [self._forward(e, ids).logits[0] for e, _ in members]
            values = []
            for offset, token in enumerate(continuation):
                position = len(prompt_ids) + offset - 1
                mixed = self._mix(members, [logits[position] for logits in outputs])
                values.append(float(mixed[token]))
            results.append(values)
        return results

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            ids = torch.tensor([self._encode(text)])
            output = self._forward(None, ids, hidden=True)
            rows.append(output.hidden_states[-1][0].float().mean(dim=0))
        return torch.stack(rows)


class MemoisingEngine:
    """Wraps an engine and remembers deterministic answers (temperature 0) and embeddings, so an
    evaluation that asks the same expert the same question twice (e.g. every coalition of a
    Shapley measurement) runs it once. Re-registering an expert id forgets what it answered.

    Safe to call from many threads (a batching inner engine decodes their calls together): a request that
    another thread is already generating waits for that answer instead of generating it again."""

    def __init__(self, inner):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.generations: dict[tuple, Generation] = {}
        self.embeddings: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._pending: dict[tuple, threading.Event] = {}  # keys being generated now, set when answered
        self._experts: dict[str, Expert] = {}  # as registered through this engine

    def register_expert(self, expert: Expert) -> None:
        with self._lock:
            previous = self._experts.get(expert.id) or getattr(self.inner, "experts", {}).get(expert.id)
            if previous is not None and previous is not expert:
                self.generations = {k: v for k, v in self.generations.items() if expert.id not in dict(k[1])}
            self._experts[expert.id] = expert
        self.inner.register_expert(expert)

    @staticmethod
    def _key(request: GenerationRequest) -> tuple | None:
        if request.temperature > 0 or request.mixture_rule is not None:
            return None
        return (request.prompt, tuple(sorted(request.mixture.items())), request.max_tokens, tuple(request.stop),
                request.presence_penalty, request.frequency_penalty, tuple(sorted(request.logit_bias.items())),
                request.logprobs, request.json_output, json.dumps(request.json_schema, sort_keys=True))

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        keys = [self._key(request) for request in requests]
        answers: dict[int, Generation] = {}
        mine, waiting = [], []  # indices this call generates; indices another call is generating
        with self._lock:
            claimed: set[tuple] = set()
            for i, key in enumerate(keys):
                if key is None:
                    mine.append(i)
                elif key in self.generations:
                    answers[i] = self.generations[key]
                elif key in self._pending or key in claimed:
                    waiting.append(i)
                else:
                    claimed.add(key)
                    self._pending[key] = threading.Event()
                    mine.append(i)
            self.hits += len(requests) - len(mine)
            self.misses += len(mine)
        try:
            fresh = self.inner.generate([requests[i] for i in mine]) if mine else []
        finally:
            with self._lock:
                for i in mine:
                    if keys[i] is not None:
                        self._pending.pop(keys[i]).set()
        with self._lock:
            for i, generation in zip(mine, fresh):
                answers[i] = generation
                if keys[i] is not None:
                    self.generations[keys[i]] = generation
        for i in waiting:
            answers[i] = self._answer_of(keys[i], requests[i])
        return [answers[i] for i in range(len(requests))]

    def _answer_of(self, key: tuple, request: GenerationRequest) -> Generation:
        """The answer another call is generating; generated here if that call failed."""
        with self._lock:
            event = self._pending.get(key)
        if event is not None:
            event.wait()
        with self._lock:
            answer = self.generations.get(key)
        return answer if answer is not None else self.generate([request])[0]

    def next_token_logits(self, requests: list[GenerationRequest]) -> torch.Tensor:
        return self.inner.next_token_logits(requests)

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        return self.inner.score(requests)

    def embed(self, texts: list[str]) -> torch.Tensor:
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text not in self.embeddings))
        if missing:
            rows = self.inner.embed(missing)
            with self._lock:
                for text, row in zip(missing, rows):
                    self.embeddings[text] = row
        with self._lock:
            return torch.stack([self.embeddings[text] for text in texts])
