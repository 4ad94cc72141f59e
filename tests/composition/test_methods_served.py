"""Every added collaboration method is served live: a worker's task message names it, and the serving path
(gpu_workers.serving.run_message, the scheduler's engine) answers with choices, usage and an attribution."""
import uuid
from decimal import Decimal

import pytest

from gpu_workers import serving
from tests.gpu_workers.conftest import gpu_world  # noqa: F401  (the fixture: a tiny base and three adapters)

DEV = [{"prompt": "ab", "answers": ["x"]}]
SERVED = {
    "graph_router": {"dev_set": DEV, "max_tokens": 2},
    "mentor_collab": {"mentor": "beta", "decision_proportion": 1.0, "patch_tokens": 2},
    "nudging": {"nudger": "alpha"},
    "co_llm": {"assistant": "gamma"},
    "mixture_of_agents": {"layers": 1},
    "llm_blender": {"top_k": 2},
    "knowledge_cards": {"knowledge_tokens": 3},
    "multiagent_feedback": {"feedback_count": 1, "feedback_tokens": 2},
    "heterogeneous_swarm": {"edges": [["alpha", "gamma"]], "output": "gamma"},
    "slm_mux": {"samples": 2},
    "structured": {"topology": "star", "rounds": 1},
}
# Weight-level methods combine adapters of the same modules: the world's adapters differ, so one expert each.
SERVED_ALONE = {
    "lorahub": {"dev_set": DEV, "max_tokens": 2, "budget": 4, "population": 2},
    "model_swarms": {"dev_set": DEV, "max_tokens": 2, "iterations": 1, "extra_particles": 1},
    "greedy_soup": {"dev_set": DEV, "max_tokens": 2},
    "expo": {"strong": "alpha", "alpha": 0.5},
}


def message(gpu_world, strategy, config, experts):
    base, adapters = gpu_world
    return {
        "request_id": f"req-{uuid.uuid4().hex}",
        "base_model": {"name": "tiny", "path": str(base), "content_hash": "unused-by-workers"},
        "experts": [{"id": e, "adapter_path": str(adapters[e].path), "sha256": adapters[e].sha256} for e in experts],
        "strategy": strategy,
        "strategy_config": config,
        "prompt": "hello",
        "params": {"max_tokens": 4, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": 1, "n": 1},
    }


@pytest.mark.parametrize("strategy, config, experts", [
    *[(name, config, ("alpha", "beta", "gamma")) for name, config in SERVED.items()],
    *[(name, config, ("alpha",)) for name, config in SERVED_ALONE.items()],
])
def test_each_added_method_is_served_with_usage_and_attribution(gpu_world, strategy, config, experts):  # noqa: F811
    result = serving.run_message(message(gpu_world, strategy, config, experts))
    assert "error" not in result, result
    assert len(result["choices"]) == 1 and result["choices"][0]["finish_reason"] in ("stop", "length")
    assert 0 < result["usage"]["completion_tokens"] <= 4
    assert set(result["attribution"]) == set(experts)
    assert sum(Decimal(value) for value in result["attribution"].values()) == 1


def test_a_served_methods_configuration_error_is_a_strategy_error(gpu_world):  # noqa: F811
    result = serving.run_message(message(gpu_world, "nudging", {"gamma": 0.5}, ("alpha", "beta")))
    assert result["error"]["code"] == "strategy_error"
    assert "'nudger' is required" in result["error"]["message"]
