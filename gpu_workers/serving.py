"""Run one task message on this process's engine: the work behind the Celery task and streaming.

A message carries everything (see gpu_workers.tasks): the base model's path, each expert's adapter
directory and sha256, the strategy and its configuration (and what it learned when its system was composed,
restored rather than learned again), the prompt or chat messages, the sampling parameters. Nothing here
touches the database. Failures that the caller can act on (a malformed message, an
adapter that does not match its hash, a strategy configuration error, an engine error) come back as
{"request_id", "error": {"message", "code"}} rather than as exceptions.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import torch
from celery.exceptions import SoftTimeLimitExceeded

from composition import decoding, tools
from composition.attribution import rounded_attribution
from composition.errors import CompositionError, UnconstrainedAnswer
from composition.experts import Expert, load_expert
from composition.strategies import CompletionRequest, build_strategy
from gpu_workers import contract
from gpu_workers.adapter_pool import AdapterError, adapter_digests
from gpu_workers.batching import Cancelled, Scheduler
from gpu_workers.engine import MosaicEngine, get_engine, serving_dtype
from gpu_workers.token_clock import TokenClock

EXPERT_CACHE_SIZE = 256
STRATEGY_CACHE_SIZE = 64


MessageError = contract.MessageError
ExpertRef = contract.ExpertRef


def parse_message(message) -> contract.TaskMessage:
    """The task message as the contract types it, on a worker that holds its base model."""
    parsed = contract.TaskMessage.from_dict(message)
    if not Path(parsed.base_model.path).is_dir():
        raise MessageError(f"base model directory {parsed.base_model.path} does not exist on this worker")
    return parsed


def completion_request(parsed: contract.TaskMessage, prompt: str) -> CompletionRequest:
    """The strategies' request for a message: its prompt (rendered) and its sampling parameters. A tool_choice
    that requires a call constrains decoding to a call of the offered functions (composition.tools.call_schema),
    which cannot be combined with a response_format of the client's own."""
    request = CompletionRequest(prompt=prompt, **parsed.params.__dict__)
    call_schema = tools.call_schema(parsed.tools, parsed.tool_choice) if parsed.tools else None
    if call_schema is not None:
        if request.json_output:
            raise contract.ParamError("response_format", "response_format cannot be combined with a tool_choice "
                                                         "that requires a tool call.")
        request = CompletionRequest(**{**request.__dict__, "json_output": True, "json_schema": call_schema})
    return request


class _BoundedCache(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def get_or_make(self, key, make):
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = make()
        with self.lock:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        return value


_experts = _BoundedCache(EXPERT_CACHE_SIZE)
_strategies = _BoundedCache(STRATEGY_CACHE_SIZE)


def _checked_expert(ref: ExpertRef) -> Expert:
    def load():
        path = Path(ref.adapter_path)
        if ref.sha256 not in adapter_digests(path):
            raise AdapterError(f"expert {ref.id}: the adapter at {path} does not match its sha256")
        try:
            return load_expert(ref.id, path)
        except CompositionError as error:
            raise AdapterError(f"expert {ref.id}: {error}") from error

    return _experts.get_or_make((ref.id, ref.adapter_path, ref.sha256), load)


class ServingEngine:
    """The engine as strategies see it: generations go through the base model's scheduler loop (continuous
    batching, gpu_workers.batching) and stop at the request's deadline; when a listener is set for this thread,
    the text of single-request generations of the user's prompt is streamed (one per choice, in order).

    A request whose client left (should_stop() answers True, asked at every step) stops within one step: each
    generation ends with what it has (finish_reason "cancelled"), so the strategy returns at once and the
    tokens already generated are still counted."""

    def __init__(self, engine: MosaicEngine, **scheduler_options):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.scheduler = Scheduler(engine, **scheduler_options)
        self._local = threading.local()

    def listen(self, prompt: str | None, listener, *, deadline: float | None = None, should_stop=None) -> None:
        self._local.prompt, self._local.listener, self._local.choice = prompt, listener, 0
        self._local.deadline, self._local.should_stop = deadline, should_stop

    def register_expert(self, expert):
        return self.engine.register_expert(expert)

    def next_token_logits(self, requests):
        return self.engine.next_token_logits(requests)

    def embed(self, texts):
        return self.engine.embed(texts)

    def score(self, requests):
        return self.engine.score(requests)

    def generate(self, requests, on_token=None):
        listener = getattr(self._local, "listener", None)
        if listener is not None and len(requests) == 1 and requests[0].prompt == self._local.prompt:
            choice = self._local.choice
            self._local.choice += 1
            on_token = lambda _index, text: listener(choice, text)  # noqa: E731
        try:
            return self.scheduler.generate(requests, on_token=on_token,
                                           deadline=getattr(self._local, "deadline", None),
                                           should_stop=getattr(self._local, "should_stop", None))
        except Cancelled as cancelled:
            if cancelled.by_client:
                return cancelled.partial
            raise


_serving_engines: dict[int, ServingEngine] = {}
_serving_lock = threading.Lock()


def engine_options_from_env(environ=None) -> dict:
    """Worker settings: MOSAIC_ADAPTER_BUDGET_MB (adapter pool bytes on the device), MOSAIC_ADAPTER_MAX_SLOTS,
    MOSAIC_LORA_BACKEND (auto | torch | triton), MOSAIC_PREFIX_CACHE_MB (prompt prefixes kept; 0: none)."""
    environ = os.environ if environ is None else environ
    options: dict = {}
    for variable, key, convert in (
        ("MOSAIC_ADAPTER_BUDGET_MB", "adapter_budget_bytes", lambda value: int(value) << 20),
        ("MOSAIC_ADAPTER_MAX_SLOTS", "max_slots", int),
        ("MOSAIC_LORA_BACKEND", "lora_backend", str),
        ("MOSAIC_PREFIX_CACHE_MB", "prefix_cache_bytes", lambda value: int(value) << 20),
    ):
        if environ.get(variable):
            try:
                options[key] = convert(environ[variable])
            except ValueError as error:
                raise ValueError(f"{variable}={environ[variable]!r} is not valid: {error}") from error
    if options.get("lora_backend", "auto") not in ("auto", "torch", "triton"):
        raise ValueError(f"MOSAIC_LORA_BACKEND must be auto, torch or triton, not {options['lora_backend']!r}")
    options["dtype"] = worker_dtype(environ)
    return options


def worker_dtype(environ=None) -> torch.dtype:
    """MOSAIC_WORKER_DTYPE: auto (the default: bfloat16 on CUDA and on a CPU with bfloat16 instructions, float32
    elsewhere), float32 or bfloat16."""
    environ = os.environ if environ is None else environ
    choice = environ.get("MOSAIC_WORKER_DTYPE") or "auto"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return serving_dtype(choice, device)
    except ValueError as error:
        raise ValueError(f"MOSAIC_WORKER_DTYPE: {error}") from error


def scheduler_options_from_env(environ=None) -> dict:
    """MOSAIC_MAX_BATCH_ROWS (lanes decoding together; MOSAIC_MAX_BATCH is its former name),
    MOSAIC_MAX_PREFILL_TOKENS (prompt tokens prefilled in one step), MOSAIC_MAX_BATCH_TOKENS (KV tokens the
    running batch may reserve: prompts plus max_tokens, per lane)."""
    environ = os.environ if environ is None else environ
    options = {}
    for variable, key in (("MOSAIC_MAX_BATCH", "max_batch_rows"), ("MOSAIC_MAX_BATCH_ROWS", "max_batch_rows"),
                          ("MOSAIC_MAX_PREFILL_TOKENS", "max_prefill_tokens"),
                          ("MOSAIC_MAX_BATCH_TOKENS", "max_batch_tokens")):
        if environ.get(variable):
            try:
                options[key] = int(environ[variable])
            except ValueError as error:
                raise ValueError(f"{variable}={environ[variable]!r} is not an integer") from error
            if options[key] < 1:
                raise ValueError(f"{variable} must be at least 1")
    return options


def configure_torch_threads(environ=None) -> None:
    """MOSAIC_TORCH_THREADS: torch's intra-op threads in this worker (default: torch's own choice). On a CPU
    shared with other processes, 1 avoids OpenMP threads that wait for each other at every operator (measured
    on a loaded 2-core machine: a 40-token prefill took 8.2 s with 2 threads, 0.34 s with 1)."""
    environ = os.environ if environ is None else environ
    value = environ.get("MOSAIC_TORCH_THREADS")
    if not value:
        return
    try:
        threads = int(value)
    except ValueError as error:
        raise ValueError(f"MOSAIC_TORCH_THREADS={value!r} is not an integer") from error
    if threads < 1:
        raise ValueError("MOSAIC_TORCH_THREADS must be at least 1")
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def serving_engine(base_model_path: str) -> ServingEngine:
    configure_torch_threads()
    engine = get_engine(base_model_path, **engine_options_from_env())
    with _serving_lock:
        if id(engine) not in _serving_engines:
            _serving_engines[id(engine)] = ServingEngine(engine, **scheduler_options_from_env())
        return _serving_engines[id(engine)]


def attribution_strings(attribution: dict[str, float], expert_ids: list[str]) -> dict[str, str]:
    """The contract's attribution: decimal strings (6 places) summing to exactly 1 over the system's experts
    (composition.attribution; {} for the base model alone)."""
    return {expert_id: str(share) for expert_id, share in rounded_attribution(attribution, expert_ids).items()}


error_result = contract.error_result


def check_fits_context(parsed: contract.TaskMessage, prompt: str, engine: ServingEngine) -> None:
    """Refuse (contract.ContextLengthExceeded) a prompt that, with max_tokens, overflows the base model's
    context window: it costs one tokenisation, where generating would hold the worker for seconds."""
    context_length = getattr(getattr(engine.engine.model, "config", None), "max_position_embeddings", None)
    if context_length:
        contract.check_context_length(
            prompt_tokens=len(engine.tokenizer(prompt)["input_ids"]), max_tokens=parsed.params.max_tokens,
            context_length=context_length, param="prompt" if parsed.prompt is not None else "messages",
        )


def render_prompt(parsed: contract.TaskMessage, tokenizer) -> str:
    """The prompt text, or the chat messages rendered with the base model's own chat template. The engine
    encodes that text with the tokenizer's special tokens, so a <bos> that the template writes is left to the
    tokenizer (Llama 3 and Mistral templates start with it; it must not appear twice)."""
    if parsed.prompt is not None:
        return parsed.prompt
    if not tokenizer.chat_template:
        raise MessageError("this base model has no chat template: use /v1/completions with a prompt")
    messages, extra = tools.messages_for_template(parsed.messages, parsed.tools, parsed.tool_choice,
                                                  template_reads_tools=tools.template_reads_tools(tokenizer))
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text


def check_logit_bias(parsed: contract.TaskMessage, engine: ServingEngine) -> None:
    vocabulary = len(engine.tokenizer)
    unknown = [token for token in parsed.params.logit_bias if token >= vocabulary]
    if unknown:
        raise contract.ParamError("logit_bias", f"logit_bias names token {unknown[0]}, but this model's "
                                                f"vocabulary has {vocabulary} tokens.")


def result_choices(parsed: contract.TaskMessage, prompt: str, result, engine: ServingEngine
                   ) -> tuple[contract.ChoiceResult, ...]:
    """Each choice's text and finish reason; with logprobs asked, its tokens' (composition.decoding's entries);
    with echo and logprobs, the prompt's tokens' (`prompt_logprobs`); with tools offered, the call the answer
    makes (`tool_calls`, finish reason "tool_calls")."""
    top = parsed.params.logprobs
    choices = []
    for index, (text, reason) in enumerate(zip(result.texts, result.finish_reasons)):
        logprobs = prompt_logprobs = tool_calls = None
        if top is not None:
            generation = result.generations[index] if index < len(result.generations) else None
            if generation is None or generation.tokens is None:
                raise contract.ParamError("logprobs", f"the {parsed.strategy} strategy cannot report "
                                                      "log-probabilities.")
            logprobs = decoding.logprob_entries(engine.tokenizer, generation.tokens)
            if parsed.echo:
                mixture = result.mixtures[index] if index < len(result.mixtures) else None
                if mixture is None:
                    raise contract.ParamError("echo", f"the {parsed.strategy} strategy decodes under no single "
                                                      "mixture, so it cannot score an echoed prompt.")
                prompt_logprobs = decoding.prompt_logprob_entries(engine, prompt, mixture, top)
        if parsed.offers_tools:
            calls = tools.parse_tool_calls(text, parsed.tools, call_id_prefix=f"call_{parsed.request_id[:12]}_{index}_")
            if calls:
                tool_calls, reason = (calls if parsed.parallel_tool_calls else calls[:1]), "tool_calls"
        choices.append(contract.ChoiceResult(index, text, reason, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                                             tool_calls=tool_calls))
    return tuple(choices)


def run_message(message: dict, *, listener=None, should_stop=None) -> dict:
    """The result dict for a task message (or its error dict). listener(choice_index, text_so_far), when
    given, is called as the engine produces the text of strategies that answer with one generation.
    should_stop(), when given, is asked at every decode step: True (the client left) ends the generations with
    what they have, and the result counts the tokens generated up to then."""
    request_id = message.get("request_id") if isinstance(message, dict) else None
    try:
        parsed = parse_message(message)
        engine = serving_engine(parsed.base_model.path)
        prompt = render_prompt(parsed, engine.tokenizer)
        check_fits_context(parsed, prompt, engine)  # before loading adapters or generating anything
        request = completion_request(parsed, prompt)
        check_logit_bias(parsed, engine)
        experts = [_checked_expert(ref) for ref in parsed.experts]
        strategy_key = (
            parsed.base_model.path, parsed.strategy, json.dumps(parsed.strategy_config, sort_keys=True),
            tuple(parsed.experts), json.dumps(parsed.learned, sort_keys=True),
        )

        def make_strategy():
            return build_strategy(parsed.strategy, parsed.strategy_config, experts, learned=parsed.learned)

        # a message that asks to learn learns afresh, never from what a cached strategy learned before
        strategy = make_strategy() if parsed.learn else _strategies.get_or_make(strategy_key, make_strategy)
        started = time.perf_counter()
        clock = TokenClock(listener)
        # a call is sent whole, never as text: with tools offered, no token reaches the listener
        engine.listen(prompt, None if parsed.offers_tools else clock, deadline=parsed.deadline,
                      should_stop=should_stop)
        try:
            result = strategy.run(request, engine)
            choices = result_choices(parsed, prompt, result, engine)
        finally:
            engine.listen(None, None)
        engine_ms = int((time.perf_counter() - started) * 1000)
        learned = strategy.learned() if parsed.learn else None
    except MessageError as error:
        return error_result(request_id, str(error), "invalid_message")
    except contract.ParamError as error:  # the client's request, refused before any generation
        return error_result(request_id, error.message, error.code, error.param)
    except AdapterError as error:
        return error_result(request_id, str(error), "adapter_error")
    except UnconstrainedAnswer as error:  # this strategy cannot answer under the requested constraint
        return error_result(request_id, f"the {parsed.strategy} strategy cannot be constrained here: {error}",
                            contract.INVALID_REQUEST, "response_format")
    except CompositionError as error:
        return error_result(request_id, str(error), "strategy_error")
    except Cancelled:
        return error_result(request_id, "the request's deadline passed while it was generating",
                            contract.DEADLINE_EXCEEDED)
    except SoftTimeLimitExceeded:
        return error_result(request_id, "the request ran past the worker's time limit", "timeout")
    except Exception as error:  # anything the engine raises: report it, keep the worker serving
        return error_result(request_id, f"engine error: {type(error).__name__}: {error}", "engine_error")
    return contract.CompletionResult(
        request_id=parsed.request_id,
        choices=choices,
        usage=contract.Usage(result.prompt_tokens, result.completion_tokens),
        attribution=attribution_strings(result.attribution, [ref.id for ref in parsed.experts]),
        engine_ms=engine_ms,
        **clock.timings(),  # first_token_ms, inter_token_ms
        learned=learned,
    ).to_dict()
