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
        }


class SwitchSpec(StrategySpec):
    name = "switch"
    level = "api"

    BOUNDARIES = {"line": ("\n",), "sentence": (". ", "! ", "? ", "\n"), "tokens": ()}

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        return {
            "segment": reader.choice("segment", tuple(cls.BOUNDARIES), "sentence"),
            "segment_tokens": reader.integer("segment_tokens", 8, minimum=1),
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


SPECS: dict[str, type[StrategySpec]] = {
    spec.name: spec
    for spec in (
        SingleSpec, EmbeddingRouterSpec, TrainedRouterSpec, CascadeSpec, SwitchSpec,
        DebateSpec, AggregateSpec,
        LogitMixtureSpec, ContrastiveSpec,
        MergeSpec, MergeSearchSpec,
        BaseAloneSpec,
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
