"""Continuous (iteration-level) batching: one scheduler loop per loaded base model.

Callers on any thread (celery -P threads -c 64, the web's threads when embedded) submit generation requests,
each for its own experts. One loop thread owns the engine's RunningBatch and repeats:

  1. drop the sequences whose request was cancelled or is past its deadline (they leave within one step);
  2. admit waiting requests, first come first served, as many as fit the bounds: rows in the batch (one per
     lane: a request mixing k experts takes k rows), prompt tokens prefilled in one step, KV tokens the batch
     may grow to, and experts the adapter pool holds at once. The head of the queue is never overtaken, so no
     request starves; one that could never fit alone fails at once;
  3. prefill the newcomers together (each gets its first token) and merge their KV cache into the batch's;
  4. one decode step for every sequence in the batch; finished ones leave and their callers get their answers.

A request that arrives during a long answer joins at the next step, never waiting for that answer to end.
Each request decodes exactly as it would alone (its own seed, its own stop rules), whatever joins or leaves.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from composition.engine import Generation, GenerationRequest
from gpu_workers.adapter_pool import PoolFull
from gpu_workers.engine import RunningBatch, Sequence


class Cancelled(RuntimeError):
    """The request was cancelled (its client left) or its deadline passed before it finished."""


@dataclass
class Ticket:
    """A caller's requests in the scheduler; `done` is set when every one finished, or one failed."""

    requests: list[GenerationRequest]
    on_token: object | None = None  # on_token(request_index, text_so_far)
    deadline: float | None = None  # epoch seconds
    results: list[Generation | None] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    admitted_at_step: int | None = None  # the decode step count when its first request joined the batch
    finished_at_step: int | None = None

    def __post_init__(self):
        self.results = [None] * len(self.requests)


@dataclass
class _Waiting:
    ticket: Ticket
    index: int
    sequence: Sequence | None = None  # tokenised when it reaches the head of the queue


@dataclass
class SchedulerStats:
    steps: int = 0  # decode steps
    prefills: int = 0  # prefill forwards (each admits one or more requests)
    admitted: int = 0  # requests admitted
    largest_batch: int = 0  # sequences decoding together, at most
    cancelled: int = 0


class Scheduler:
    def __init__(self, engine, *, max_batch_rows: int = 64, max_prefill_tokens: int = 4096,
                 max_batch_tokens: int = 1 << 16):
        self.engine = engine
        self.max_batch_rows = max_batch_rows
        self.max_prefill_tokens = max_prefill_tokens
        self.max_batch_tokens = max_batch_tokens
        self.stats = SchedulerStats()
        self.batch = RunningBatch()
        self._waiting: deque[_Waiting] = deque()
        self._owners: dict[int, tuple[Ticket, int]] = {}  # id(sequence) -> its ticket and request index
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- callers ------------------------------------------------------------------------------------------
    def submit(self, requests: list[GenerationRequest], on_token=None, *, deadline: float | None = None) -> Ticket:
        ticket = Ticket(list(requests), on_token, deadline)
        if not ticket.requests:
            ticket.done.set()
            return ticket
        with self._condition:
            self._waiting.extend(_Waiting(ticket, index) for index in range(len(ticket.requests)))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mosaic-scheduler", daemon=True)
                self._thread.start()
            self._condition.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Stop a ticket's requests: they leave the batch at the next step and free their rows."""
        with self._condition:
            ticket.cancelled = True
            self._condition.notify()

    def generate(self, requests: list[GenerationRequest], on_token=None, *, deadline: float | None = None
                 ) -> list[Generation]:
        """Like engine.generate; blocks until this call's results are ready."""
        ticket = self.submit(requests, on_token, deadline=deadline)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return list(ticket.results)

    # -- the loop -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self.batch.sequences:
                    self._condition.wait()
            self._drop_stopped()
            newcomers = self._admit()
            if newcomers:
                self._prefill(newcomers)
            if self.batch.sequences:
                try:
                    self.engine.decode(self.batch)
                except BaseException as error:  # noqa: BLE001 - the step failed for everyone in it
                    for sequence in list(self.batch.sequences):
                        owner = self._owners.get(id(sequence))
                        if owner is not None:
                            self._fail(owner[0], error)
                    self._release_batch()
                    continue
                self.stats.steps += 1
                self._retire_finished()

    def _stopped(self, ticket: Ticket, now: float) -> bool:
        return ticket.cancelled or (ticket.deadline is not None and now > ticket.deadline)

    def _drop_stopped(self) -> None:
        now = time.time()
        with self._condition:
            stopped = [w for w in self._waiting if self._stopped(w.ticket, now)]
            for waiting in stopped:
                self._waiting.remove(waiting)
                self._fail(waiting.ticket, Cancelled("the request was cancelled or passed its deadline"))
        leaving = [s for s in self.batch.sequences
                   if id(s) not in self._owners or self._stopped(self._owners[id(s)][0], now)]
        for sequence in leaving:
            owner = self._owners.get(id(sequence))
            if owner is not None:
                self.stats.cancelled += 1
                self._fail(owner[0], Cancelled("the request was cancelled or passed its deadline"))
        if leaving:
            self._keep([s for s in self.batch.sequences if id(s) in self._owners])

    def _admit(self) -> list[Sequence]:
        """The waiting requests that join now: first come, first served, as many as fit every bound."""
        newcomers: list[Sequence] = []
        rows, experts = self.batch.rows, set(self.batch.experts)
        kv_tokens = sum(len(s.lanes) * (len(s.prompt_ids) + s.request.max_tokens) for s in self.batch.sequences)
        prefill_tokens = 0
        capacity = self.engine.pool.capacity
        while True:
            with self._condition:
                if not self._waiting:
                    return newcomers
                head = self._waiting[0]
            if head.ticket.done.is_set():  # another of its requests failed
                self._pop(head)
                continue
            if head.sequence is None:
                try:
                    head.sequence = self.engine.new_sequence(head.ticket.requests[head.index])
                except Exception as error:  # noqa: BLE001 - this request cannot run: its caller hears why
                    self._pop(head)
                    self._fail(head.ticket, error)
                    continue
            sequence = head.sequence
            lanes = len(sequence.lanes)
            joined = experts | sequence.experts
            alone = not newcomers and not self.batch.sequences
            if len(sequence.experts) > capacity:
                self._pop(head)
                self._fail(head.ticket, PoolFull(
                    f"{len(sequence.experts)} experts are needed together but the adapter pool holds {capacity}"))
                continue
            fits = (rows + lanes <= self.max_batch_rows and len(joined) <= capacity
                    and prefill_tokens + lanes * len(sequence.prompt_ids) <= self.max_prefill_tokens
                    and kv_tokens + lanes * (len(sequence.prompt_ids) + sequence.request.max_tokens)
                    <= self.max_batch_tokens)
            if not fits and not alone:
                return newcomers  # it waits for rows or slots to free; nobody behind it overtakes it
            self._pop(head)
            ticket = head.ticket
            sequence.on_token = self._listener(ticket, head.index)
            self._owners[id(sequence)] = (ticket, head.index)
            if ticket.admitted_at_step is None:
                ticket.admitted_at_step = self.stats.steps
            newcomers.append(sequence)
            rows, experts = rows + lanes, joined
            prefill_tokens += lanes * len(sequence.prompt_ids)
            kv_tokens += lanes * (len(sequence.prompt_ids) + sequence.request.max_tokens)

    def _pop(self, waiting: _Waiting) -> None:
        with self._condition:
            if self._waiting and self._waiting[0] is waiting:
                self._waiting.popleft()

    @staticmethod
    def _listener(ticket: Ticket, index: int):
        if ticket.on_token is None:
            return None
        return lambda text: ticket.on_token(index, text)

    def _prefill(self, newcomers: list[Sequence]) -> None:
        try:
            self.engine.prefill(self.batch, newcomers)
        except BaseException as error:  # noqa: BLE001 - the newcomers fail; the running batch is untouched
            for sequence in newcomers:
                owner = self._owners.pop(id(sequence), None)
                if owner is not None:
                    self._fail(owner[0], error)
            return
        self.stats.prefills += 1
        self.stats.admitted += len(newcomers)
        self.stats.largest_batch = max(self.stats.largest_batch, len(self.batch))
        self._retire_finished()

    def _retire_finished(self) -> None:
        kept = []
        for sequence in self.batch.sequences:
            if id(sequence) not in self._owners:  # its ticket failed elsewhere
                continue
            if sequence.error is not None:
                self._fail(self._owners[id(sequence)][0], sequence.error)
                continue
            if not sequence.state.done:
                kept.append(sequence)
                continue
            ticket, index = self._owners.pop(id(sequence))
            ticket.results[index] = sequence.state.result()
            if all(result is not None for result in ticket.results) and not ticket.done.is_set():
                ticket.finished_at_step = self.stats.steps
                ticket.done.set()
        self._keep(kept)

    def _keep(self, kept: list[Sequence]) -> None:
        self.batch.keep(kept)
        if not self.batch.sequences:
            self._release_batch()

    def _release_batch(self) -> None:
        for sequence in self.batch.sequences:
            self._owners.pop(id(sequence), None)
        self.batch = RunningBatch()
        with self.engine.lock:
            self.engine.context.release()

    def _fail(self, ticket: Ticket, error: BaseException) -> None:
        """The ticket ends with `error`; its other requests leave the queue and the batch."""
        if ticket.done.is_set():
            return
        ticket.error = error
        ticket.finished_at_step = self.stats.steps
        for key, (owner, _index) in list(self._owners.items()):
            if owner is ticket:
                del self._owners[key]
        with self._condition:
            for waiting in [w for w in self._waiting if w.ticket is ticket]:
                self._waiting.remove(waiting)
        ticket.done.set()
