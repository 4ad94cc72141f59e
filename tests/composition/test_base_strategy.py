import pytest

from composition.engine import GenerationRequest
from composition.errors import CompositionError
from composition.strategies import CompletionRequest, build_strategy, validate_strategy_config


def test_the_base_strategy_answers_with_the_base_model_alone_and_credits_no_expert(engine):
    strategy = build_strategy("base", {}, [])

    result = strategy.run(CompletionRequest(prompt="rev abc=", max_tokens=4, temperature=0.0), engine)

    alone = engine.generate([GenerationRequest(prompt="rev abc=", mixture={}, max_tokens=4, temperature=0.0)])[0]
    assert result.texts == [alone.text]
    assert result.attribution == {}


def test_the_base_strategy_takes_no_experts_and_no_configuration(experts):
    with pytest.raises(CompositionError, match="takes no experts"):
        build_strategy("base", {}, experts[:1])
    with pytest.raises(CompositionError, match="takes no configuration"):
        validate_strategy_config("base", {"top_k": 1}, [])
