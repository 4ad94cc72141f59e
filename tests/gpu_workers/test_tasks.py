"""The Celery task serves a composed system's request from its message alone, as the contract describes,
and streaming sends the same text as it is produced."""
import time
import uuid
from decimal import Decimal

import pytest
import torch

from composition.engine import GenerationRequest, ReferenceEngine
from composition.experts import load_expert
from gpu_workers import client, contract, serving
from gpu_workers import engine as engine_module
from gpu_workers.streaming import stream_completion
from gpu_workers.tasks import run_completion
from tests.conftest import needs_redis


def make_message(gpu_world, *, experts=("alpha",), strategy="single", config=None, prompt="hello", **params):
    base, adapters = gpu_world
    message = {
        "request_id": f"req-{uuid.uuid4().hex}",
        "base_model": {"name": "tiny", "path": str(base), "content_hash": "unused-by-workers"},
        "experts": [
            {"id": adapters[e].id, "adapter_path": str(adapters[e].path), "sha256": adapters[e].sha256}
            for e in experts
        ],
        "strategy": strategy,
        "strategy_config": config if config is not None else {},
        "params": {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": None, "n": 1, **params},
    }
    if prompt is not None:
        message["prompt"] = prompt
    return message


def submit(message):
    return run_completion.apply_async(
        kwargs={"message": message}, task_id=message["request_id"], queue=f"base.{message['base_model']['name']}"
    ).get(timeout=60)


def reference_text(gpu_world, expert_id, prompt, max_tokens=8, stop=()):
    base, adapters = gpu_world
    engine = ReferenceEngine(str(base), [load_expert(expert_id, adapters[expert_id].path)])
    request = GenerationRequest(prompt=prompt, mixture={expert_id: 1.0}, max_tokens=max_tokens, stop=list(stop))
    return engine.generate([request])[0]


def test_a_completion_returns_text_usage_and_attribution_per_the_contract(gpu_world):
    message = make_message(gpu_world, experts=("alpha",), prompt="hello")

    result = submit(message)

    expected = reference_text(gpu_world, "alpha", "hello")
    assert set(result) == {"request_id", "choices", "usage", "attribution", "engine_ms", "first_token_ms",
                           "inter_token_ms"}
    assert 0 < result["first_token_ms"] <= result["engine_ms"] + 1
    assert result["request_id"] == message["request_id"]
    assert result["choices"] == [{"index": 0, "text": expected.text, "finish_reason": expected.finish_reason}]
    assert result["usage"] == {"prompt_tokens": expected.prompt_tokens, "completion_tokens": expected.completion_tokens}
    assert result["attribution"] == {"alpha": "1.000000"}
    assert isinstance(result["engine_ms"], int) and result["engine_ms"] >= 0


def test_attribution_is_decimal_strings_summing_to_exactly_one(gpu_world):
    message = make_message(gpu_world, experts=("alpha", "beta", "gamma"), strategy="logit_mixture",
                           config={}, prompt="abc", max_tokens=3)
    result = submit(message)
    assert "error" not in result, result
    assert set(result["attribution"]) == {"alpha", "beta", "gamma"}
    assert sum(Decimal(value) for value in result["attribution"].values()) == Decimal(1)


def test_attribution_rounding_keeps_the_sum_at_one():
    strings = serving.attribution_strings({"a": 1.0, "b": 1.0, "c": 1.0}, ["a", "b", "c"])
    assert sum(Decimal(v) for v in strings.values()) == 1
    assert sorted(strings.values()) == ["0.333333", "0.333333", "0.333334"]


def test_chat_messages_go_through_the_tokenizers_chat_template(gpu_world):
    message = make_message(gpu_world, prompt=None)
    message["messages"] = [{"role": "user", "content": "hi"}]

    result = submit(message)

    expected = reference_text(gpu_world, "alpha", "user: hi\nassistant: ")
    assert result["choices"][0]["text"] == expected.text
    assert result["usage"]["prompt_tokens"] == expected.prompt_tokens


def test_n_choices_are_returned_with_their_indices(gpu_world):
    message = make_message(gpu_world, temperature=0.9, seed=5, n=3, max_tokens=5)
    result = submit(message)
    assert [choice["index"] for choice in result["choices"]] == [0, 1, 2]
    assert 3 <= result["usage"]["completion_tokens"] <= 3 * 5
    assert len({choice["text"] for choice in result["choices"]}) > 1  # choice i samples with seed + i


def test_a_redelivered_request_gets_the_same_result_without_running_again(gpu_world):
    message = make_message(gpu_world, temperature=1.0, seed=None, max_tokens=8)
    first = submit(message)
    pool = serving.serving_engine(message["base_model"]["path"]).engine.pool
    lookups = pool.stats.hits + pool.stats.misses

    second = submit(message)

    assert second == first
    assert pool.stats.hits + pool.stats.misses == lookups


def test_an_adapter_that_does_not_match_its_hash_is_a_clear_error(gpu_world):
    message = make_message(gpu_world)
    message["experts"][0]["sha256"] = "f" * 64
    result = submit(message)
    assert result == {"request_id": message["request_id"], "error": {
        "message": result["error"]["message"], "code": "adapter_error"}}
    assert "does not match its sha256" in result["error"]["message"]


def test_a_strategy_configuration_error_is_returned_not_raised(gpu_world):
    result = submit(make_message(gpu_world, strategy="no_such_strategy"))
    assert result["error"]["code"] == "strategy_error"
    assert "unknown strategy" in result["error"]["message"]


GRAPH_ROUTER = {"dev_set": [{"prompt": "ab", "answers": ["x"]}, {"prompt": "cd", "answers": ["y"]}],
                "max_tokens": 2, "neighbours": 1}


def test_a_message_that_asks_to_learn_gets_what_was_learned_and_a_message_carrying_it_restores_it(gpu_world,
                                                                                                   monkeypatch):
    from composition.strategies.deferral import GraphRouter

    def router_message():
        return make_message(gpu_world, experts=("alpha", "beta"), strategy="graph_router", config=GRAPH_ROUTER)

    first = submit({**router_message(), "learn": True})
    learned = first["learned"]
    assert learned["strategy"] == "graph_router" and learned["experts"] == ["alpha", "beta"]
    learns = []
    monkeypatch.setattr(GraphRouter, "learn", lambda self, engine: learns.append(self))
    again = submit({**router_message(), "learned": learned})
    assert learns == [] and "learned" not in again
    assert again["choices"] == first["choices"] and again["attribution"] == first["attribution"]


def test_a_state_learned_for_other_experts_is_a_strategy_error(gpu_world):
    message = make_message(gpu_world, experts=("alpha", "beta"), strategy="graph_router", config=GRAPH_ROUTER)
    learned = {"strategy": "graph_router", "experts": ["beta", "alpha"], "dev_set_sha256": "0" * 64, "edges": {}}
    result = submit({**message, "learned": learned})
    assert result["error"]["code"] == "strategy_error" and "learned with another experts" in result["error"]["message"]


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda m: m.pop("prompt"), "exactly one of prompt and messages"),
        (lambda m: m["params"].update(max_tokens=0), "max_tokens must be at least 1"),
        (lambda m: m["params"].update(temperature="hot"), "temperature must be a number"),
        (lambda m: m["params"].update(top_p=0), "top_p must be greater than 0"),
        (lambda m: m["params"].update(seed=2**64), "seed must be at most 9223372036854775807"),
        (lambda m: m.update(prompt="a\ud800b"), "prompt holds a lone surrogate"),
        (lambda m: m["base_model"].update(path="/nowhere"), "does not exist on this worker"),
        (lambda m: m["experts"][0].pop("sha256"), "needs id, adapter_path and sha256"),
    ],
)
def test_a_malformed_message_is_refused_with_the_reason(gpu_world, change, expected):
    message = make_message(gpu_world)
    change(message)
    result = submit(message)
    assert result["error"]["code"] == "invalid_message"
    assert expected in result["error"]["message"]


def test_the_task_is_acknowledged_late_with_time_limits():
    task = run_completion
    assert task.name == "gpu_workers.run_completion"
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert 0 < task.soft_time_limit < task.time_limit


def test_a_worker_process_loads_its_base_model_at_start(gpu_world, monkeypatch):
    from celery.signals import worker_process_init

    from gpu_workers import engine as engine_module

    base, _ = gpu_world
    key = str(base.resolve())
    engine_module._ENGINES.pop(key, None)
    monkeypatch.setenv("MOSAIC_WORKER_BASE_MODEL_PATH", str(base))

    worker_process_init.send(sender=None)

    assert key in engine_module._ENGINES


def collect(events):
    events = list(events)
    assert isinstance(events[-1], contract.DoneEvent), events[-1]
    assert all(isinstance(event, contract.TokenEvent) for event in events[:-1])
    texts: dict[int, str] = {}
    for event in events[:-1]:
        assert event.offset == len(texts.get(event.choice_index, ""))
        texts[event.choice_index] = texts.get(event.choice_index, "") + event.text_delta
    return events, texts


def test_streaming_sends_the_text_as_it_is_generated_then_the_result(gpu_world):
    message = make_message(gpu_world, max_tokens=10)
    events, texts = collect(stream_completion(message))
    result = events[-1].result
    assert texts == {0: result.choices[0].text}
    assert len(events) - 1 >= 5  # token by token, not one chunk at the end


def test_streaming_several_choices_keeps_each_choices_text_apart(gpu_world):
    message = make_message(gpu_world, max_tokens=6, n=2, temperature=1.0, seed=21)
    events, texts = collect(stream_completion(message))
    result = events[-1].result
    assert texts == {choice.index: choice.text for choice in result.choices}


def test_streaming_never_sends_text_that_a_stop_sequence_removes(gpu_world):
    probe = reference_text(gpu_world, "alpha", "hello", max_tokens=10).text
    message = make_message(gpu_world, max_tokens=10, stop=[probe[5:8]])
    events, texts = collect(stream_completion(message))
    result = events[-1].result
    assert result.choices[0].finish_reason == "stop"
    assert texts == {0: result.choices[0].text} == {0: probe[:5]}


def test_streaming_a_text_level_strategy_sends_the_final_text_in_chunks(gpu_world):
    message = make_message(gpu_world, experts=("alpha", "beta"), strategy="aggregate", config={}, max_tokens=4,
                           prompt="abc")
    events, texts = collect(stream_completion(message))
    assert texts.get(0, "") == events[-1].result.choices[0].text


def test_streaming_a_failure_ends_with_the_error(gpu_world):
    message = make_message(gpu_world, strategy="no_such_strategy")
    events = list(stream_completion(message))
    assert len(events) == 1 and isinstance(events[0], contract.ErrorEvent)
    assert events[0].error.code == "strategy_error"


@needs_redis
def test_a_real_worker_serves_the_task_through_the_redis_broker(gpu_world):
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    import mosaic.celery

    broker = "redis://127.0.0.1:6379/12"
    app = Celery("mosaic-gpu-test", broker=broker, backend=broker)
    app.conf.update(task_always_eager=False, task_serializer="json", result_serializer="json",
                    accept_content=["json"], task_acks_late=True, worker_prefetch_multiplier=1)
    task = app.tasks["gpu_workers.run_completion"]
    message = make_message(gpu_world, max_tokens=6)
    try:
        app.set_current()
        with start_worker(app, pool="solo", concurrency=1, queues=["base.tiny"], perform_ping_check=False,
                          shutdown_timeout=30):
            result = task.apply_async(kwargs={"message": message}, task_id=message["request_id"],
                                      queue="base.tiny").get(timeout=60)
            streamed_message = contract.TaskMessage.from_dict(
                {**message, "request_id": f"{message['request_id']}-stream", "stream": True,
                 "deadline": time.time() + 60})
            events, texts = collect(client.stream_from_broker(app, streamed_message))
    finally:
        mosaic.celery.app.set_current()

    expected = reference_text(gpu_world, "alpha", "hello", max_tokens=6)
    assert result["choices"][0]["text"] == expected.text
    assert events[-1].result.request_id == streamed_message.request_id
    assert texts == {0: expected.text}


def test_worker_engine_settings_are_read_strictly_from_the_environment():
    assert serving.engine_options_from_env({"MOSAIC_ADAPTER_BUDGET_MB": "512", "MOSAIC_ADAPTER_MAX_SLOTS": "48",
                                            "MOSAIC_LORA_BACKEND": "triton", "MOSAIC_PREFIX_CACHE_MB": "0",
                                            "MOSAIC_WORKER_DTYPE": "bfloat16"}) == {
        "adapter_budget_bytes": 512 << 20, "max_slots": 48, "lora_backend": "triton", "prefix_cache_bytes": 0,
        "dtype": torch.bfloat16}
    assert serving.engine_options_from_env({}) == {"dtype": serving.worker_dtype({"MOSAIC_WORKER_DTYPE": "auto"})}
    with pytest.raises(ValueError, match="MOSAIC_ADAPTER_BUDGET_MB='lots'"):
        serving.engine_options_from_env({"MOSAIC_ADAPTER_BUDGET_MB": "lots"})
    with pytest.raises(ValueError, match="MOSAIC_LORA_BACKEND must be"):
        serving.engine_options_from_env({"MOSAIC_LORA_BACKEND": "cuda"})
    with pytest.raises(ValueError, match="MOSAIC_WORKER_DTYPE: the dtype must be auto, float32 or bfloat16, not 'fp8'"):
        serving.engine_options_from_env({"MOSAIC_WORKER_DTYPE": "fp8"})


def test_a_worker_serves_bfloat16_by_default_only_where_the_cpu_computes_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine_module, "cpu_computes_bf16", lambda: False)
    assert engine_module.serving_dtype("auto", cpu) == torch.float32
    assert engine_module.serving_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert engine_module.serving_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr(engine_module, "cpu_computes_bf16", lambda: True)
    assert engine_module.serving_dtype("auto", cpu) == torch.bfloat16
    assert engine_module.serving_dtype("float32", cpu) == torch.float32


def test_bfloat16_instructions_are_read_off_the_cpu_flags():
    assert engine_module.cpu_computes_bf16("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert engine_module.cpu_computes_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not engine_module.cpu_computes_bf16("flags\t\t: fpu avx2 avx512f avx512_vnni\n")


def test_a_message_taken_after_its_deadline_is_dropped_not_run(gpu_world):
    import time

    message = {**make_message(gpu_world), "deadline": time.time() - 1}

    result = submit(message)

    assert result == {"request_id": message["request_id"], "error": {
        "message": "the request's deadline passed before a worker could run it", "code": "deadline_exceeded"}}


def test_a_message_within_its_deadline_runs(gpu_world):
    import time

    result = submit({**make_message(gpu_world), "deadline": time.time() + 60})

    assert "error" not in result and result["choices"][0]["text"] == reference_text(gpu_world, "alpha", "hello").text
