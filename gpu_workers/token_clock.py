"""Token timing of one request: time to first token and mean inter-token latency.

    clock = TokenClock(listener)        # wraps the streaming listener (or None), started now
    engine.listen(prompt, clock)        # the engine calls clock(choice_index, text_so_far) after each token
    result.update(clock.timings())      # {"first_token_ms", "inter_token_ms"} once tokens were seen

Measured for strategies whose answer is one generation of the user's prompt (single, routers, merges, a fixed
logit mixture), the same ones that stream; for others the engine calls no listener and timings() is {}.
"""
from __future__ import annotations

import threading
import time


class TokenClock:
    def __init__(self, listener=None):
        self.listener = listener
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self._last_at: dict[int, float] = {}
        self._gaps_s = 0.0
        self._gap_count = 0
        self._lock = threading.Lock()

    def __call__(self, choice: int, text: str) -> None:
        now = time.perf_counter()
        with self._lock:
            if self.first_token_at is None:
                self.first_token_at = now
            previous = self._last_at.get(choice)
            if previous is not None:
                self._gaps_s += now - previous
                self._gap_count += 1
            self._last_at[choice] = now
        if self.listener is not None:
            self.listener(choice, text)

    def timings(self) -> dict:
        if self.first_token_at is None:
            return {}
        timings = {"first_token_ms": round((self.first_token_at - self.started) * 1000, 3)}
        if self._gap_count:
            timings["inter_token_ms"] = round(self._gaps_s / self._gap_count * 1000, 3)
        return timings
