"""Concurrent generate() calls for different experts are merged into shared batches, and each caller gets
exactly what it would have got alone."""
import threading

import pytest

from composition.engine import GenerationRequest
from composition.experts import load_expert
from gpu_workers.batching import GenerationBatcher
from gpu_workers.engine import MosaicEngine


@pytest.fixture(scope="module")
def engine(gpu_world):
    base, adapters = gpu_world
    engine = MosaicEngine(base, lora_backend="torch")
    for adapter in adapters.values():
        engine.register_expert(load_expert(adapter.id, adapter.path))
    return engine


def call_concurrently(batcher, jobs):
    results = [None] * len(jobs)
    errors = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(position):
        start.wait()
        try:
            results[position] = batcher.generate(jobs[position])
        except Exception as error:  # collected for the assertions
            errors[position] = error

    threads = [threading.Thread(target=run, args=(position,)) for position in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


JOBS = [
    [GenerationRequest(prompt="abc", mixture={"alpha": 1.0}, max_tokens=6)],
    [GenerationRequest(prompt="hello there", mixture={"beta": 1.0}, max_tokens=4)],
    [GenerationRequest(prompt="x", mixture={}, max_tokens=5),
     GenerationRequest(prompt="y", mixture={"gamma": 1.0}, max_tokens=3)],
    [GenerationRequest(prompt="mix", mixture={"alpha": 0.5, "gamma": 0.5}, max_tokens=5, temperature=0.8, seed=3)],
]


def test_concurrent_calls_share_a_batch_and_get_their_own_results(engine):
    alone = [[g.text for g in engine.generate(job)] for job in JOBS]
    batcher = GenerationBatcher(engine, window_s=0.3)

    results, errors = call_concurrently(batcher, JOBS)

    assert errors == [None] * len(JOBS)
    assert [[g.text for g in result] for result in results] == alone
    assert batcher.stats.jobs == len(JOBS)
    assert batcher.stats.batches < len(JOBS)
    assert batcher.stats.largest_batch > 1


def test_a_batch_takes_only_as_many_experts_as_the_pool_holds(engine, gpu_world):
    base, adapters = gpu_world
    one_slot = MosaicEngine(base, lora_backend="torch", adapter_budget_bytes=engine.pool.slot_bytes(8))
    for expert_id in ("alpha", "beta"):  # ranks 4 and 8
        one_slot.register_expert(load_expert(expert_id, adapters[expert_id].path))
    assert one_slot.pool.capacity == 1
    batcher = GenerationBatcher(one_slot, window_s=0.3)

    results, errors = call_concurrently(batcher, JOBS[:2])

    assert errors == [None, None]
    assert batcher.stats.batches == 2 and batcher.stats.largest_batch == 1
    assert [[g.text for g in result] for result in results] == [[g.text for g in engine.generate(job)]
                                                                for job in JOBS[:2]]


def test_one_failing_request_does_not_fail_the_others_in_its_batch(engine):
    batcher = GenerationBatcher(engine, window_s=0.3)
    bad = [GenerationRequest(prompt="x", mixture={"nobody": 1.0}, max_tokens=2)]

    results, errors = call_concurrently(batcher, [JOBS[0], bad, JOBS[1]])

    assert "unknown expert" in str(errors[1])
    assert errors[0] is None and errors[2] is None
    assert [g.text for g in results[0]] == [g.text for g in engine.generate(JOBS[0])]
