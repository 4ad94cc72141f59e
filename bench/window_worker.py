"""The GPU worker app with the window batching of before issue 12, for bench.serving's baseline only:

    celery -A bench.window_worker worker -Q base.<name> -P threads -c 64

The same Celery app, tasks, streaming and engine as gpu_workers.app, except that each base model's generations
go through bench.window_batcher.GenerationBatcher (calls gathered for 5 ms, then run to their end under the
engine lock) instead of the continuous-batching scheduler. Deadlines and cancellation are not seen by it, as
they were not then.
"""
from __future__ import annotations

from bench.window_batcher import GenerationBatcher
from gpu_workers import serving
from gpu_workers.app import app  # noqa: F401 - celery -A finds the app here


class WindowScheduler:
    def __init__(self, engine, **_scheduler_options):
        self.batcher = GenerationBatcher(engine, max_batch=64, window_s=0.005)

    def generate(self, requests, on_token=None, *, deadline=None, should_stop=None):
        return self.batcher.generate(requests, on_token=on_token)


serving.Scheduler = WindowScheduler
