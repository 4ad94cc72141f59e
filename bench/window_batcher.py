"""The window batcher that served before continuous batching (gpu_workers.batching before issue 12), kept
only as the baseline of bench.scheduling: generate() calls that arrive within a short window become one
MosaicEngine.generate call that runs to its end under the engine lock, so a request that arrives during a long
answer waits for all of it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from composition.engine import Generation, GenerationRequest


@dataclass
class _Job:
    requests: list[GenerationRequest]
    on_token: object | None
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Generation] | None = None
    error: BaseException | None = None


@dataclass
class BatcherStats:
    batches: int = 0
    jobs: int = 0
    largest_batch: int = 0  # requests in the largest merged generate call


class GenerationBatcher:
    def __init__(self, engine, *, max_batch: int = 64, window_s: float = 0.005):
        self.engine = engine
        self.max_batch = max_batch
        self.window_s = window_s
        self.stats = BatcherStats()
        self._pending: list[_Job] = []
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def generate(self, requests: list[GenerationRequest], on_token=None) -> list[Generation]:
        """Like engine.generate; blocks until this call's results are ready."""
        job = _Job(list(requests), on_token)
        with self._condition:
            self._pending.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mosaic-batcher", daemon=True)
                self._thread.start()
            self._condition.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.results

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
            time.sleep(self.window_s)  # let concurrent callers join this batch
            with self._condition:
                jobs = self._take()
            self._serve(jobs)

    def _take(self) -> list[_Job]:
        """The oldest jobs that fit together: max_batch requests, and experts the pool can hold at once."""
        capacity = self.engine.pool.capacity
        taken, requests, experts = [], 0, set()
        for job in self._pending:
            job_experts = {expert for request in job.requests for expert in request.mixture}
            fits = requests + len(job.requests) <= self.max_batch and len(experts | job_experts) <= capacity
            if taken and not fits:
                break
            taken.append(job)
            requests += len(job.requests)
            experts |= job_experts
        del self._pending[: len(taken)]
        return taken

    def _serve(self, jobs: list[_Job]) -> None:
        flat = [request for job in jobs for request in job.requests]
        owners = [(job, index) for job in jobs for index in range(len(job.requests))]

        def on_token(position: int, text: str) -> None:
            job, index = owners[position]
            if job.on_token is not None:
                job.on_token(index, text)

        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(flat))
        try:
            results = self.engine.generate(flat, on_token=on_token)
        except BaseException as error:
            if len(jobs) == 1:
                jobs[0].error = error
                jobs[0].done.set()
                return
            for job in jobs:  # find out whose request failed; the others still get their answers
                self._serve([job])
            return
        start = 0
        for job in jobs:
            job.results = results[start: start + len(job.requests)]
            start += len(job.requests)
            job.done.set()
