"""Strategy specs: each strategy's name, level and configuration rules, apart from its runtime.

As peft separates a LoraConfig from the model it builds, a spec validates a system's strategy configuration
with no weights and no torch: the web process checks a configuration (composing a system, a request's plan
without revoked experts) without loading any model code. Each runtime strategy in composition.strategies
subclasses its spec.

    strategy_spec(name) -> the spec class; strategy_level(name); validate_strategy_config(name, config, ids)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

from composition.errors import CompositionError

LEVELS = ("api", "text", "logit", "weight")
BASE_CLASS = "base"  # a trained router's label for "the base model answers alone"


class ConfigReader:
    """Reads a strategy config key by key with clear errors; `finish()` rejects unknown keys."""

    def __init__(self, strategy: str, config: dict, expert_ids: list[str]):
        if not isinstance(config, dict):
            raise CompositionError(f"{strategy}: config must be a JSON object, got {type(config).__name__}")
        if not expert_ids:
            raise CompositionError(f"{strategy}: a system needs at least one expert (the expert list is empty)")
        if len(set(expert_ids)) != len(expert_ids):
            raise CompositionError(f"{strategy}: the expert list names an expert twice")
        self.strategy = strategy
        self.config = config
        self.expert_ids = list(expert_ids)
        self.seen: set[str] = set()

    def _error(self, key: str, message: str) -> CompositionError:
        return CompositionError(f"{self.strategy}: '{key}' {message}")

    def _get(self, key: str, default):
        self.seen.add(key)
        if key in self.config:
            return self.config[key], True
        if default is REQUIRED:
            raise CompositionError(f"{self.strategy}: '{key}' is required")
        return default, False

    def number(self, key: str, default=None, *, minimum=None, maximum=None) -> float | None:
        value, given = self._get(key, default)
        if value is None and (not given or default is None):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._error(key, f"must be a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self._error(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self._error(key, f"must be <= {maximum}, got {value}")
        return float(value)

    def integer(self, key: str, default=None, *, minimum=None, maximum=None) -> int | None:
        value, given = self._get(key, default)
        if value is None and (not given or default is None):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self._error(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self._error(key, f"must be <= {maximum}, got {value}")
        return int(value)

    def text(self, key: str, default=None) -> str | None:
        value, given = self._get(key, default)
        if value is None and (not given or default is None):
            return None
        if not isinstance(value, str):
            raise self._error(key, f"must be a string, got {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default=None) -> str:
        value = self.text(key, default)
        if value not in options:
            raise self._error(key, f"must be one of {', '.join(options)}; got {value!r}")
        return value

    def expert(self, key: str, default=None, *, extra: tuple[str, ...] = ()) -> str | None:
        value, given = self._get(key, default)
        if value is None and (not given or default is None):
            return None
        if not isinstance(value, str):
            raise self._error(key, f"must be an expert id (a string), got {value!r}")
        if value not in self.expert_ids and value not in extra:
            known = ", ".join(self.expert_ids + list(extra))
            raise self._error(key, f"names unknown expert {value!r}; the system's experts are: {known}")
        return value

    def expert_list(self, key: str, default=None) -> list[str]:
        value, _ = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._error(key, f"must be a list of expert ids, got {value!r}")
        if not value:
            raise self._error(key, "must name at least one expert (the list is empty)")
        unknown = [item for item in value if item not in self.expert_ids]
        if unknown:
            raise self._error(key, f"names unknown experts {unknown}; the system's experts are: {', '.join(self.expert_ids)}")
        if len(set(value)) != len(value):
            raise self._error(key, "names an expert twice")
        return list(value)

    def weights(self, key: str, default=None) -> dict[str, float] | None:
        """{expert_id: weight}: known experts, non-negative numbers summing to 1."""
        value, given = self._get(key, default)
        if value is None and (not given or default is None):
            return None
        if not isinstance(value, dict) or not value:
            raise self._error(key, f"must be a non-empty object of expert id -> weight, got {value!r}")
        unknown = [item for item in value if item not in self.expert_ids]
        if unknown:
            raise self._error(key, f"names unknown experts {unknown}; the system's experts are: {', '.join(self.expert_ids)}")
        for expert_id, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise self._error(key, f"weight of {expert_id!r} must be a number, got {weight!r}")
            if weight < 0:
                raise self._error(key, f"weight of {expert_id!r} must be non-negative, got {weight}")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise self._error(key, f"must sum to 1 (the weights sum to {total:.6g})")
        return {expert_id: float(weight) for expert_id, weight in value.items()}

    def text_list(self, key: str, default=None) -> list[str]:
        value, _ = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._error(key, f"must be a list of strings, got {value!r}")
        return list(value)

    def raw(self, key: str, default=None):
        value, _ = self._get(key, default)
        return value

    def finish(self, normalised: dict) -> dict:
        unknown = sorted(set(self.config) - self.seen)
        if unknown:
            raise CompositionError(
                f"{self.strategy}: unknown config keys {unknown}; allowed keys: {sorted(self.seen)}"
            )
        return normalised


REQUIRED = object()


def uniform(expert_ids: list[str]) -> dict[str, float]:
    return {expert_id: 1.0 / len(expert_ids) for expert_id in expert_ids}


@dataclass(frozen=True)
class MergeMethodOptions:
    uses_density: bool
    uses_scale: bool


# The options each merge method of composition.merging reads (a test checks that they agree).
MERGE_METHOD_OPTIONS = {
    "linear": MergeMethodOptions(uses_density=False, uses_scale=False),
    "task_arithmetic": MergeMethodOptions(uses_density=False, uses_scale=True),
    "ties": MergeMethodOptions(uses_density=True, uses_scale=True),
    "dare_linear": MergeMethodOptions(uses_density=True, uses_scale=True),
    "dare_ties": MergeMethodOptions(uses_density=True, uses_scale=True),
}


def read_merge_options(reader: ConfigReader) -> dict:
    method = reader.choice("method", tuple(MERGE_METHOD_OPTIONS), "task_arithmetic")
    merger = MERGE_METHOD_OPTIONS[method]
    density = reader.number("density", 0.5 if merger.uses_density else None, minimum=1e-6, maximum=1)
    if density is not None and not merger.uses_density:
        raise CompositionError(f"{reader.strategy}: 'density' is only used by ties, dare_linear and dare_ties")
    scale = reader.number("scale", None, minimum=0, maximum=100)
    if scale is not None and not merger.uses_scale:
        raise CompositionError(f"{reader.strategy}: 'scale' is not used by the linear method (it is 1)")
    return {
        "method": method,
        "density": density,
        "scale": scale,
        "sign_method": reader.choice("sign_method", ("total", "frequency"), "total"),
        "rank": reader.integer("rank", None, minimum=1, maximum=4096),
        "seed": reader.integer("seed", 0),
    }


DEFAULT_REFINE_TEMPLATE = "{prompt}\nOther answers:\n{others}\nYour previous answer: {own}\nImproved answer: "
DEFAULT_SUMMARY_TEMPLATE = "{prompt}\nCandidate answers:\n{answers}\nFinal answer: "


def _template(reader: ConfigReader, key: str, default: str, fields: tuple[str, ...]) -> str:
    template = reader.text(key, default)
    try:
        template.format(**{name: "" for name in fields})
    except (KeyError, IndexError, ValueError) as error:
        raise CompositionError(
            f"{reader.strategy}: '{key}' may only use the fields {', '.join('{' + f + '}' for f in fields)} ({error})"
        ) from error
    return template


class StrategySpec:
    """A strategy's name, level and configuration rules. Subclasses set `name` and `level` and read their
    config in `read_config`; `validate` returns the normalised config or raises CompositionError."""

    name: ClassVar[str]
    level: ClassVar[str]

    @classmethod
    def validate(cls, config: dict, expert_ids: list[str]) -> dict:
        reader = ConfigReader(cls.name, config, expert_ids)
        return reader.finish(cls.read_config(reader))

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        raise NotImplementedError

    @classmethod
    def learns(cls, config: dict) -> bool:
        """Whether this strategy, with this (normalised) config, learns something when it is prepared: what it
        learns is stored with the system when it is composed, and restored instead of learned again when served."""
        return False


class SingleSpec(StrategySpec):
    name = "single"
    level = "api"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        default = reader.expert_ids[0] if len(reader.expert_ids) == 1 else None
        expert = reader.expert("expert", default)
        if expert is None:
            raise CompositionError("single: 'expert' is required when the system has several experts")
        return {"expert": expert}


class BaseAloneSpec(StrategySpec):
    name = "base"
    level = "api"

    @classmethod
    def validate(cls, config: dict, expert_ids: list[str]) -> dict:
        if expert_ids:
            raise CompositionError("base: the base model alone takes no experts")
        if not isinstance(config, dict) or config:
            raise CompositionError(f"base: takes no configuration, got {config!r}")
        return {}


class EmbeddingRouterSpec(StrategySpec):
    name = "embedding_router"
    level = "api"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        top_k = reader.integer("top_k", 1, minimum=1, maximum=len(reader.expert_ids))
        temperature = reader.number("temperature", 0.05, minimum=1e-6)
        return {"top_k": top_k, "temperature": temperature}


class TrainedRouterSpec(StrategySpec):
    name = "trained_router"
    level = "api"
    learns = classmethod(lambda cls, config: True)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        examples = reader.raw("examples", None)
        if examples is not None:
            if not isinstance(examples, list) or not examples:
                raise CompositionError("trained_router: 'examples' must be a non-empty list of {text, expert}")
            for index, example in enumerate(examples):
                if not isinstance(example, dict) or set(example) != {"text", "expert"}:
                    raise CompositionError(f"trained_router: examples[{index}] must be an object with text and expert")
                if not isinstance(example["text"], str):
                    raise CompositionError(f"trained_router: examples[{index}].text must be a string")
                if example["expert"] not in reader.expert_ids and example["expert"] != BASE_CLASS:
                    raise CompositionError(
                        f"trained_router: examples[{index}] names unknown expert {example['expert']!r}"
                    )
        return {
            "examples": examples,
            "mode": reader.choice("mode", ("top1", "mixture"), "top1"),
            "epochs": reader.integer("epochs", 300, minimum=1, maximum=100000),
            "learning_rate": reader.number("learning_rate", 0.05, minimum=1e-9),
            "l2": reader.number("l2", 1e-3, minimum=0),
            "seed": reader.integer("seed", 0),
        }


class CascadeSpec(StrategySpec):
    name = "cascade"
    level = "api"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "order": reader.expert_list("order", list(reader.expert_ids)),
            "threshold": reader.number("threshold", -0.5, maximum=0),
            "fallback": reader.choice("fallback", ("last", "most_confident", "base"), "last"),
            "probe_tokens": reader.integer("probe_tokens", 16, minimum=1, maximum=4096),
        }


def read_mix(reader: ConfigReader) -> dict:
    """`mix`: where a per-token mixture applies. "distributions" (default): every expert keeps its own KV cache
    over the same prefix and their next-token distributions are mixed (k rows per token). "adapters": one KV
    cache, the experts' LoRA deltas mixed at every projection with the token's weights (one row per token)."""
    return {"mix": reader.choice("mix", ("distributions", "adapters"), "distributions")}


class SwitchSpec(StrategySpec):
    name = "switch"
    level = "api"

    BOUNDARIES = {"line": ("\n",), "sentence": (". ", "! ", "? ", "\n"), "tokens": ()}

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "segment": reader.choice("segment", tuple(cls.BOUNDARIES), "sentence"),
            "segment_tokens": reader.integer("segment_tokens", 8, minimum=1),
            **read_mix(reader),
        }


class LogitMixtureSpec(StrategySpec):
    name = "logit_mixture"
    level = "logit"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        source = reader.choice("source", ("fixed", "router"), "fixed")
        weights = reader.weights("weights", uniform(reader.expert_ids) if source == "fixed" else None)
        if source == "router" and weights is not None:
            raise CompositionError("logit_mixture: 'weights' is only used with source 'fixed'")
        return {
            "source": source,
            "weights": weights,
            "router_temperature": reader.number("router_temperature", 0.05, minimum=1e-6),
            **read_mix(reader),
        }


class ContrastiveSpec(StrategySpec):
    name = "contrastive"
    level = "logit"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        default_expert = reader.expert_ids[0] if len(reader.expert_ids) == 1 else None
        expert = reader.expert("expert", default_expert)
        if expert is None:
            raise CompositionError("contrastive: 'expert' is required when the system has several experts")
        amateur = reader.expert("amateur", "base", extra=("base",))
        if amateur == expert:
            raise CompositionError("contrastive: 'amateur' must differ from 'expert'")
        return {
            "expert": expert,
            "amateur": amateur,
            "lambda": reader.number("lambda", 0.5, minimum=0, maximum=10),
            "alpha": reader.number("alpha", 0.1, minimum=0, maximum=1),
        }


class DebateSpec(StrategySpec):
    name = "debate"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        summariser = reader.expert("summariser", reader.expert_ids[0])
        debaters = reader.expert_list("debaters", list(reader.expert_ids))
        return {
            "summariser": summariser,
            "debaters": debaters,
            "rounds": reader.integer("rounds", 1, minimum=0, maximum=5),
            "refine_template": _template(reader, "refine_template", DEFAULT_REFINE_TEMPLATE, ("prompt", "others", "own")),
            "summary_template": _template(reader, "summary_template", DEFAULT_SUMMARY_TEMPLATE, ("prompt", "answers")),
        }


class AggregateSpec(StrategySpec):
    name = "aggregate"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        method = reader.choice("method", ("vote", "judge"), "vote")
        judge = reader.expert("judge", "base" if method == "judge" else None, extra=("base",))
        if method == "vote" and judge is not None:
            raise CompositionError("aggregate: 'judge' is only used with method 'judge'")
        extract = reader.text("extract", None)
        if extract is not None:
            try:
                re.compile(extract)
            except re.error as error:
                raise CompositionError(f"aggregate: 'extract' is not a valid regular expression: {error}") from error
        return {
            "method": method,
            "judge": judge,
            "experts": reader.expert_list("experts", list(reader.expert_ids)),
            "extract": extract,
        }


class MergeSpec(StrategySpec):
    name = "merge"
    level = "weight"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        weights = reader.weights("weights", uniform(reader.expert_ids))
        return {"weights": weights, **read_merge_options(reader)}


class MergeSearchSpec(StrategySpec):
    name = "merge_search"
    level = "weight"
    learns = classmethod(lambda cls, config: True)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        dev_set = reader.raw("dev_set", None)
        if not isinstance(dev_set, list) or not dev_set:
            raise CompositionError("merge_search: 'dev_set' must be a non-empty list of {prompt, answers}")
        for index, item in enumerate(dev_set):
            if (not isinstance(item, dict) or not isinstance(item.get("prompt"), str)
                    or not isinstance(item.get("answers"), list)
                    or not all(isinstance(answer, str) for answer in item["answers"])):
                raise CompositionError(f"merge_search: dev_set[{index}] must have a prompt string and a list of answers")
        search = reader.choice("search", ("grid", "random"), "random")
        step = reader.number("grid_step", 0.5, minimum=0.05, maximum=1)
        if search == "grid" and abs(1 / step - round(1 / step)) > 1e-9:
            raise CompositionError("merge_search: 'grid_step' must divide 1 (e.g. 0.5, 0.25, 0.2)")
        return {
            "dev_set": dev_set,
            "search": search,
            "grid_step": step,
            "samples": reader.integer("samples", 8, minimum=1, maximum=1000),
            "search_seed": reader.integer("search_seed", 0),
            "metric": reader.choice("metric", ("exact_match", "token_f1"), "exact_match"),
            "max_tokens": reader.integer("max_tokens", 32, minimum=1),
            "stop": reader.text_list("stop", []),
            **read_merge_options(reader),
        }


# --- the collaboration methods (composition.strategies.deferral, collaboration, optimised) -----------------


def read_dev_set(reader: ConfigReader, *, required: bool = True) -> list[dict] | None:
    dev_set = reader.raw("dev_set", None)
    if dev_set is None and not required:
        return None
    name = reader.strategy
    if not isinstance(dev_set, list) or not dev_set:
        raise CompositionError(f"{name}: 'dev_set' must be a non-empty list of {{prompt, answers}}")
    for index, item in enumerate(dev_set):
        if (not isinstance(item, dict) or not isinstance(item.get("prompt"), str)
                or not isinstance(item.get("answers"), list) or not item["answers"]
                or not all(isinstance(answer, str) for answer in item["answers"])
                or set(item) - {"prompt", "answers"}):
            raise CompositionError(
                f"{name}: dev_set[{index}] must be an object with a prompt string and a non-empty list of answers"
            )
    return [{"prompt": item["prompt"], "answers": list(item["answers"])} for item in dev_set]


def read_dev_options(reader: ConfigReader) -> dict:
    """How a development set is answered and scored (greedy generation, then the metric)."""
    return {
        "metric": reader.choice("metric", ("exact_match", "token_f1"), "exact_match"),
        "max_tokens": reader.integer("max_tokens", 32, minimum=1, maximum=4096),
        "stop": reader.text_list("stop", []),
    }


BASE = "base"


def helper_expert(reader: ConfigReader, key: str) -> str:
    default = reader.expert_ids[0] if len(reader.expert_ids) == 1 else None
    expert = reader.expert(key, default)
    if expert is None:
        raise CompositionError(f"{reader.strategy}: '{key}' is required when the system has several experts")
    return expert


def read_utility(reader: ConfigReader, default: str) -> dict:
    return {"utility": reader.choice("utility", ("loss", "metric"), default), **read_dev_options(reader)}


MOA_TEMPLATE = ("{prompt}\nYou have been given answers from several models. Synthesise them into one better "
                "answer.\n{answers}\nAnswer: ")


RANK_TEMPLATE = "{prompt}\nCandidate A: {a}\nCandidate B: {b}\nThe better candidate is "


FUSE_TEMPLATE = "{prompt}\nThe best candidate answers:\n{answers}\nCombine their strengths into one answer: "


KNOWLEDGE_TEMPLATE = "Write what is known that helps with this.\n{prompt}\nKnowledge: "


READ_TEMPLATE = "Knowledge:\n{knowledge}\n\n{prompt}"


FEEDBACK_TEMPLATE = "{prompt}\nAn answer: {answer}\nFeedback on this answer: "


REFINE_TEMPLATE = "{prompt}\nYour previous answer: {answer}\nFeedback:\n{feedback}\nRefined answer: "


SUMMARY_TEMPLATE = "{prompt}\nAnswers:\n{answers}\nFinal answer: "


NODE_TEMPLATE = "{prompt}\nWhat others wrote:\n{inputs}\nYour answer: "


REGENERATE_TEMPLATE = ("{prompt}\nYour previous answer: {own}\nAnswers from the assistants you read:\n{inputs}\n"
                       "Updated answer: ")


TOPOLOGIES = ("chain", "star", "complete", "custom")


class GraphRouterSpec(StrategySpec):
    name = "graph_router"
    level = "api"
    learns = classmethod(lambda cls, config: True)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "dev_set": read_dev_set(reader),
            **read_dev_options(reader),
            "neighbours": reader.integer("neighbours", 5, minimum=1, maximum=1000),
            "temperature": reader.number("temperature", 0.05, minimum=1e-6),
        }


class MentorCollabSpec(StrategySpec):
    name = "mentor_collab"
    level = "api"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        generator = reader.expert("generator", BASE, extra=(BASE,))
        mentor = helper_expert(reader, "mentor")
        if mentor == generator:
            raise CompositionError("mentor_collab: 'mentor' must differ from 'generator'")
        return {
            "generator": generator,
            "mentor": mentor,
            "decision_proportion": reader.number("decision_proportion", 0.25, minimum=0, maximum=1),
            "patch_tokens": reader.integer("patch_tokens", 8, minimum=1, maximum=256),
            "seed": reader.integer("seed", 0),
        }


class NudgingSpec(StrategySpec):
    name = "nudging"
    level = "api"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        base = reader.expert("base", BASE, extra=(BASE,))
        nudger = helper_expert(reader, "nudger")
        if nudger == base:
            raise CompositionError("nudging: 'nudger' must differ from 'base'")
        return {"base": base, "nudger": nudger, "gamma": reader.number("gamma", 0.4, minimum=0, maximum=1)}


class CoLLMSpec(StrategySpec):
    name = "co_llm"
    level = "api"
    learns = classmethod(lambda cls, config: config["gate"] == "learned")

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        base = reader.expert("base", BASE, extra=(BASE,))
        assistant = helper_expert(reader, "assistant")
        if assistant == base:
            raise CompositionError("co_llm: 'assistant' must differ from 'base'")
        gate = reader.choice("gate", ("confidence", "learned"), "confidence")
        dev_set = read_dev_set(reader, required=gate == "learned")
        if gate == "confidence" and dev_set is not None:
            raise CompositionError("co_llm: 'dev_set' trains the learned gate; gate 'confidence' takes none")
        return {
            "base": base, "assistant": assistant, "gate": gate, "dev_set": dev_set,
            "threshold": reader.number("threshold", 0.5, minimum=0, maximum=1),
            "epochs": reader.integer("epochs", 200, minimum=1, maximum=100000),
            "l2": reader.number("l2", 1e-3, minimum=0),
            "seed": reader.integer("seed", 0),
        }


class MixtureOfAgentsSpec(StrategySpec):
    name = "mixture_of_agents"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "proposers": reader.expert_list("proposers", list(reader.expert_ids)),
            "aggregator": reader.expert("aggregator", reader.expert_ids[0]),
            "layers": reader.integer("layers", 2, minimum=1, maximum=4),
            "aggregate_template": _template(reader, "aggregate_template", MOA_TEMPLATE, ("prompt", "answers")),
        }


class LLMBlenderSpec(StrategySpec):
    name = "llm_blender"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        experts = reader.expert_list("experts", list(reader.expert_ids))
        return {
            "experts": experts,
            "ranker": reader.expert("ranker", BASE, extra=(BASE,)),
            "fuser": reader.expert("fuser", BASE, extra=(BASE,)),
            "top_k": reader.integer("top_k", min(2, len(experts)), minimum=1, maximum=len(experts)),
            "rank_template": _template(reader, "rank_template", RANK_TEMPLATE, ("prompt", "a", "b")),
            "fuse_template": _template(reader, "fuse_template", FUSE_TEMPLATE, ("prompt", "answers")),
        }


class KnowledgeCardsSpec(StrategySpec):
    name = "knowledge_cards"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        cards = reader.expert_list("cards", list(reader.expert_ids))
        return {
            "cards": cards,
            "reader": reader.expert("reader", BASE, extra=(BASE,)),
            "top_k": reader.integer("top_k", len(cards), minimum=1, maximum=len(cards)),
            "knowledge_tokens": reader.integer("knowledge_tokens", 32, minimum=1, maximum=1024),
            "knowledge_template": _template(reader, "knowledge_template", KNOWLEDGE_TEMPLATE, ("prompt",)),
            "read_template": _template(reader, "read_template", READ_TEMPLATE, ("knowledge", "prompt")),
        }


class MultiAgentFeedbackSpec(StrategySpec):
    name = "multiagent_feedback"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        agents = reader.expert_list("agents", list(reader.expert_ids))
        return {
            "agents": agents,
            "summariser": reader.expert("summariser", reader.expert_ids[0]),
            "rounds": reader.integer("rounds", 1, minimum=0, maximum=5),
            "feedback_count": reader.integer("feedback_count", min(2, max(len(agents) - 1, 0)), minimum=0,
                                             maximum=max(len(agents) - 1, 0)),
            "feedback_tokens": reader.integer("feedback_tokens", 32, minimum=1, maximum=1024),
            "feedback_template": _template(reader, "feedback_template", FEEDBACK_TEMPLATE, ("prompt", "answer")),
            "refine_template": _template(reader, "refine_template", REFINE_TEMPLATE, ("prompt", "answer", "feedback")),
            "summary_template": _template(reader, "summary_template", SUMMARY_TEMPLATE, ("prompt", "answers")),
        }


class HeterogeneousSwarmSpec(StrategySpec):
    name = "heterogeneous_swarm"
    level = "text"
    learns = classmethod(lambda cls, config: config["edges"] is None)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        edges = reader.raw("edges", None)
        output = reader.expert("output", None)
        if edges is not None:
            if (not isinstance(edges, list) or not all(
                    isinstance(edge, list) and len(edge) == 2 and all(node in reader.expert_ids for node in edge)
                    and edge[0] != edge[1] for edge in edges)):
                raise CompositionError(
                    "heterogeneous_swarm: 'edges' must be a list of [from, to] pairs of two different experts of the system")
            if output is None:
                raise CompositionError("heterogeneous_swarm: 'output' is required with 'edges'")
            order = cls.order_of(reader.expert_ids, [tuple(edge) for edge in edges])
            if order is None:
                raise CompositionError("heterogeneous_swarm: 'edges' contain a cycle")
            edges = [list(edge) for edge in edges]
        elif output is not None:
            raise CompositionError("heterogeneous_swarm: 'output' is only used with 'edges'")
        dev_set = read_dev_set(reader, required=edges is None)
        return {
            "edges": edges, "output": output, "dev_set": dev_set, **read_dev_options(reader),
            "particles": reader.integer("particles", 4, minimum=1, maximum=50),
            "iterations": reader.integer("iterations", 3, minimum=0, maximum=50),
            "seed": reader.integer("seed", 0, minimum=0),
            "node_template": _template(reader, "node_template", NODE_TEMPLATE, ("prompt", "inputs")),
        }

    @staticmethod
    def order_of(nodes: list[str], edges: list[tuple[str, str]]) -> list[str] | None:
        incoming = {node: {a for a, b in edges if b == node} for node in nodes}
        order = []
        while len(order) < len(nodes):
            ready = [n for n in nodes if n not in order and incoming[n] <= set(order)]
            if not ready:
                return None
            order.append(ready[0])
        return order


class SlmMuxSpec(StrategySpec):
    name = "slm_mux"
    level = "text"
    learns = classmethod(lambda cls, config: config["dev_set"] is not None)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "experts": reader.expert_list("experts", list(reader.expert_ids)),
            "samples": reader.integer("samples", 5, minimum=1, maximum=64),
            "sample_temperature": reader.number("sample_temperature", 0.7, minimum=1e-3, maximum=5),
            "dev_set": read_dev_set(reader, required=False),
            **read_dev_options(reader),
        }


class StructuredPipelineSpec(StrategySpec):
    name = "structured"
    level = "text"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        agents = reader.expert_list("agents", list(reader.expert_ids))
        topology = reader.choice("topology", TOPOLOGIES, "chain")
        edges = reader.raw("edges", None)
        if topology == "custom":
            if (not isinstance(edges, list) or not all(
                    isinstance(edge, list) and len(edge) == 2 and all(node in agents for node in edge)
                    and edge[0] != edge[1] for edge in edges)):
                raise CompositionError("structured: 'edges' must be a list of [speaker, listener] pairs of two "
                                       "different agents")
            edges = [list(edge) for edge in edges]
        elif edges is not None:
            raise CompositionError("structured: 'edges' is only used with topology 'custom'")
        final = reader.expert("final", agents[-1] if topology == "chain" else agents[0])
        if final not in agents:
            raise CompositionError(f"structured: 'final' must be one of the agents {agents}")
        return {
            "agents": agents, "topology": topology, "edges": edges, "final": final,
            "rounds": reader.integer("rounds", 2, minimum=0, maximum=5),
            "regenerate_template": _template(reader, "regenerate_template", REGENERATE_TEMPLATE,
                                             ("prompt", "own", "inputs")),
        }


class LoraHubSpec(StrategySpec):
    name = "lorahub"
    level = "weight"
    learns = classmethod(lambda cls, config: True)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "dev_set": read_dev_set(reader),
            **read_utility(reader, "loss"),
            "bound": reader.number("bound", 1.5, minimum=0.1, maximum=10),
            "l1": reader.number("l1", 0.05, minimum=0, maximum=10),
            "sigma": reader.number("sigma", 0.5, minimum=1e-3, maximum=5),
            "budget": reader.integer("budget", 40, minimum=2, maximum=2000),
            "population": reader.integer("population", None, minimum=2, maximum=200),
            "rank": reader.integer("rank", None, minimum=1, maximum=4096),
            "seed": reader.integer("seed", 0, minimum=0),
        }


class ModelSwarmsSpec(StrategySpec):
    name = "model_swarms"
    level = "weight"
    learns = classmethod(lambda cls, config: True)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "dev_set": read_dev_set(reader),
            **read_utility(reader, "metric"),
            "extra_particles": reader.integer("extra_particles", 2, minimum=0, maximum=100),
            "iterations": reader.integer("iterations", 5, minimum=1, maximum=200),
            "inertia": reader.number("inertia", 0.2, minimum=0, maximum=1),
            "cognitive": reader.number("cognitive", 0.3, minimum=0, maximum=1),
            "social": reader.number("social", 0.4, minimum=0, maximum=1),
            "repel": reader.number("repel", 0.05, minimum=0, maximum=1),
            "step": reader.number("step", 0.5, minimum=1e-3, maximum=2),
            "step_factor": reader.number("step_factor", 0.95, minimum=0.1, maximum=1),
            "min_step": reader.number("min_step", 0.1, minimum=0, maximum=2),
            "patience": reader.integer("patience", 5, minimum=1, maximum=200),
            "rank": reader.integer("rank", None, minimum=1, maximum=4096),
            "seed": reader.integer("seed", 0, minimum=0),
        }


class GreedySoupSpec(StrategySpec):
    name = "greedy_soup"
    level = "weight"
    learns = classmethod(lambda cls, config: True)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {"dev_set": read_dev_set(reader), **read_dev_options(reader),
                "rank": reader.integer("rank", None, minimum=1, maximum=4096)}


class ExPOSpec(StrategySpec):
    name = "expo"
    level = "weight"
    # the pair (when not named) and α (among several candidates) are chosen on the development set
    learns = classmethod(lambda cls, config: config["strong"] is None or len(config["alpha_candidates"] or []) > 1)

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        strong = reader.expert("strong", None)
        weak = reader.expert("weak", None, extra=("base",))
        dev_set = read_dev_set(reader, required=False)
        candidates = reader.raw("alpha_candidates", None)
        if candidates is not None:
            if (not isinstance(candidates, list) or not candidates
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 10
                               for c in candidates)):
                raise CompositionError("expo: 'alpha_candidates' must be a non-empty list of numbers in [0, 10]")
            candidates = [float(c) for c in candidates]
        if strong is None and weak is not None:
            raise CompositionError("expo: 'weak' needs 'strong'")
        if strong is not None and strong == weak:
            raise CompositionError("expo: 'weak' must differ from 'strong'")
        if dev_set is None and (strong is None or candidates is not None):
            raise CompositionError(
                "expo: without a 'dev_set', name 'strong' (and optionally 'weak') and give one 'alpha', "
                "not 'alpha_candidates'"
            )
        return {
            "strong": strong,
            "weak": weak if strong is None or weak is not None else "base",
            "alpha": reader.number("alpha", 0.3, minimum=0, maximum=10),
            "alpha_candidates": candidates,
            "dev_set": dev_set,
            **read_dev_options(reader),
            "rank": reader.integer("rank", None, minimum=1, maximum=4096),
        }


SPECS: dict[str, type[StrategySpec]] = {
    spec.name: spec
    for spec in (
        SingleSpec, EmbeddingRouterSpec, TrainedRouterSpec, CascadeSpec, SwitchSpec,
        DebateSpec, AggregateSpec,
        LogitMixtureSpec, ContrastiveSpec,
        MergeSpec, MergeSearchSpec,
        BaseAloneSpec,
        GraphRouterSpec, MentorCollabSpec, NudgingSpec, CoLLMSpec,
        MixtureOfAgentsSpec, LLMBlenderSpec, KnowledgeCardsSpec, MultiAgentFeedbackSpec, HeterogeneousSwarmSpec,
        SlmMuxSpec, StructuredPipelineSpec,
        LoraHubSpec, ModelSwarmsSpec, GreedySoupSpec, ExPOSpec,
    )
}


def strategy_spec(name: str) -> type[StrategySpec]:
    if name not in SPECS:
        raise CompositionError(f"unknown strategy {name!r}; known strategies: {', '.join(SPECS)}")
    return SPECS[name]


def strategy_level(name: str) -> str:
    return strategy_spec(name).level


def validate_strategy_config(name: str, config: dict, expert_ids: list[str]) -> dict:
    return strategy_spec(name).validate(config, list(expert_ids))


def strategy_learns(name: str, config: dict) -> bool:
    """Whether a system of this strategy and (normalised) config learns something when it is composed."""
    return strategy_spec(name).learns(config)
