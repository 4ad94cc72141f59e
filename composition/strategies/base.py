"""What every strategy shares: the request/result shapes, the config reader, the base class."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from composition.attribution import normalise_attribution
from composition.engine import DecodeState, Engine, Generation, GenerationRequest, check_request
from composition.errors import CompositionError
from composition.experts import Expert, check_same_base
from composition.strategy_specs import REQUIRED, ConfigReader, StrategySpec, uniform  # noqa: F401 - re-exported



@dataclass
class CompletionRequest:
    prompt: str
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    # Passed to every generation (composition.decoding): see GenerationRequest.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None
    json_output: bool = False
    json_schema: dict | None = None


@dataclass
class CompletionResult:
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    attribution: dict[str, float]
    # Per choice: the generation whose text is the answer (its tokens and log-probabilities), and the mixture
    # that generated it, where one did (None where the answer is not one generation under one mixture).
    generations: list[Generation | None] = field(default_factory=list)
    mixtures: list[dict[str, float] | None] = field(default_factory=list)


@dataclass
class Choice:
    """One answer of a strategy: the text, how it ended, its completion tokens, and who shaped it."""

    text: str
    finish_reason: str
    completion_tokens: int
    attribution: dict[str, float]
    generation: Generation | None = None  # the generation whose text this is, when it is one
    mixture: dict[str, float] | None = None  # the mixture that generated it, when one did


def full_attribution(expert_ids: list[str], weights: dict[str, float]) -> dict[str, float]:
    """Every expert of the system with its share (composition.attribution), as floats."""
    return {expert_id: float(share) for expert_id, share in normalise_attribution(weights, expert_ids).items()}


class Strategy(StrategySpec):
    """A way to answer a prompt with several experts.

    Subclasses set `name` and `level`, read their config in `read_config` and answer one choice
    in `complete`. `run` answers n choices (choice i uses seed + i) and averages their attribution."""

    name: ClassVar[str]
    level: ClassVar[str]

    def __init__(self, config: dict, experts: list[Expert]):
        if not experts:
            raise CompositionError(f"{self.name}: a system needs at least one expert (the expert list is empty)")
        check_same_base(experts)
        self.experts = list(experts)
        self.experts_by_id = {expert.id: expert for expert in experts}
        self.expert_ids = [expert.id for expert in experts]
        self.config = self.validate(config, self.expert_ids)
        self._prepared_for = None  # the engine this strategy last prepared

    # Strategies that learn (`learns(config)`, strategy_specs) learn in `learn(engine)` when prepared, unless
    # `restore(learned)` gave them what an earlier `learned()` returned: then `use_learned` takes that instead.
    restored: dict | None = None
    has_learned = False

    def prepare(self, engine: Engine) -> None:
        """Make the engine know every expert this strategy uses (called once per engine); a strategy that learns
        learns now, or takes what was restored."""
        for expert in self.experts:
            engine.register_expert(expert)
        if self.learns(self.config):
            self.learn_or_restore(engine)

    def learn_or_restore(self, engine: Engine) -> None:
        if self.restored is not None:
            self.use_learned(self.restored, engine)
        else:
            self.learn(engine)
        self.has_learned = True

    def learn(self, engine: Engine) -> None:
        raise NotImplementedError

    def learned_state(self) -> dict:
        """What `learn` found, as JSON (Python floats round-trip through JSON exactly)."""
        raise NotImplementedError

    def use_learned(self, learned: dict, engine: Engine) -> None:
        """Answer with what was learned (a `learned()` of this strategy on the same experts and config)."""
        raise NotImplementedError

    def learning_set_sha256(self) -> str | None:
        """The hash of what this strategy learns from: its development set (None when it has none)."""
        from composition.strategies.development import dev_set_sha256

        dev_set = self.config.get("dev_set")
        return dev_set_sha256(dev_set) if dev_set else None

    def learned(self) -> dict:
        """What this strategy learned, to store with its system and restore later: "strategy", "experts",
        "dev_set_sha256", "evaluations" (how many candidates it scored) and its own keys (`learned_state`)."""
        if not self.learns(self.config):
            raise CompositionError(f"{self.name}: this configuration learns nothing")
        if self.restored is not None:
            return dict(self.restored)
        if not self.has_learned:
            raise CompositionError(f"{self.name}: nothing learned yet (the strategy has not been prepared)")
        return {"strategy": self.name, "experts": list(self.expert_ids), "dev_set_sha256": self.learning_set_sha256(),
                "evaluations": len(getattr(self, "evaluations", [])), **self.learned_state()}

    def restore(self, learned: dict) -> None:
        """Take what `learned()` returned for this strategy on the same experts and development set, instead of
        learning it again when prepared. Anything else is refused (CompositionError)."""
        if not self.learns(self.config):
            raise CompositionError(f"{self.name}: this configuration learns nothing, so there is nothing to restore")
        if not isinstance(learned, dict):
            raise CompositionError(f"{self.name}: a learned state is a JSON object")
        expected = {"strategy": self.name, "experts": list(self.expert_ids),
                    "dev_set_sha256": self.learning_set_sha256()}
        for key, value in expected.items():
            if learned.get(key) != value:
                raise CompositionError(f"{self.name}: the learned state was learned with another {key} "
                                       f"({learned.get(key)!r}, not {value!r})")
        self.restored = learned
        self.has_learned = False
        self._prepared_for = None

    def complete(self, prompt: str, request: CompletionRequest, seed: int | None, engine: Engine) -> Choice:
        raise NotImplementedError

    def run(self, request: CompletionRequest, engine: Engine) -> CompletionResult:
        if request.n < 1:
            raise CompositionError("n must be at least 1")
        check_request(GenerationRequest(prompt=request.prompt, max_tokens=request.max_tokens,
                                        temperature=request.temperature, top_p=request.top_p))
        if self._prepared_for is not engine:
            self.prepare(engine)
            self._prepared_for = engine
        choices = []
        for index in range(request.n):
            seed = None if request.seed is None else request.seed + index
            choices.append(self.complete(request.prompt, request, seed, engine))
        attribution = {expert_id: 0.0 for expert_id in self.expert_ids}
        for choice in choices:
            for expert_id, weight in full_attribution(self.expert_ids, choice.attribution).items():
                attribution[expert_id] += weight / len(choices)
        return CompletionResult(
            texts=[choice.text for choice in choices],
            finish_reasons=[choice.finish_reason for choice in choices],
            prompt_tokens=count_tokens(engine, request.prompt),
            completion_tokens=sum(choice.completion_tokens for choice in choices),
            attribution=full_attribution(self.expert_ids, attribution),
            generations=[choice.generation for choice in choices],
            mixtures=[choice.mixture for choice in choices],
        )

    # helpers for subclasses

    def generation_request(self, prompt: str, request: CompletionRequest, seed: int | None,
                           mixture: dict[str, float], **overrides) -> GenerationRequest:
        values = dict(prompt=prompt, mixture=mixture, max_tokens=request.max_tokens,
                      temperature=request.temperature, top_p=request.top_p, stop=list(request.stop), seed=seed,
                      presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
                      logit_bias=dict(request.logit_bias), logprobs=request.logprobs,
                      json_output=request.json_output, json_schema=request.json_schema)
        values.update(overrides)
        return GenerationRequest(**values)


def count_tokens(engine: Engine, text: str) -> int:
    return len(engine.tokenizer(text)["input_ids"])


def decode_step_by_step(
    engine: Engine,
    generation_request: GenerationRequest,
    next_logprobs: Callable[[str, int], torch.Tensor],
) -> Generation:
    """Decode one request with a strategy's own next-token rule.

    `next_logprobs(context_text, step)` gets the prompt plus the text generated so far and returns
    log-probabilities [vocab]; picking, stopping and seeding follow the engine's DecodeState."""
    state = DecodeState(generation_request, engine.tokenizer, count_tokens(engine, generation_request.prompt))
    step = 0
    while not state.done:
        generated = engine.tokenizer.decode(state.token_ids, skip_special_tokens=True)
        logprobs = next_logprobs(generation_request.prompt + generated, step)
        state.step(torch.log_softmax(logprobs.float(), dim=-1))
        step += 1
    return state.result()
