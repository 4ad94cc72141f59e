"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions. HTTP in and out only:
serving a completion is marketplace.services.completions.

Authentication is `Authorization: Bearer mos_<prefix>.<secret>`, an organization API key
(marketplace.api.key_authentication)."""
import json
import time

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from gpu_workers import contract
from marketplace import quotas
from marketplace.api.key_authentication import HasKeyScope, OrganizationKeyAuthentication
from marketplace.api.openai_responses import (
    ChatCompletionSerializer,
    ModelListSerializer,
    ModelSerializer,
    TextCompletionSerializer,
)
from marketplace.models import ComposedSystem
from marketplace.selectors.systems import system_for_organization, systems_callable_by
from marketplace.services import completions, idempotency, openai_params
from domain.errors import DomainError
from mosaic.errors import error_body
from mosaic.api_input import validated
from mosaic.parsers import LimitedJSONParser


class OpenAIView(APIView):
    authentication_classes = [OrganizationKeyAuthentication]
    permission_classes = [HasKeyScope]
    required_scopes: tuple[str, ...] = ("read", "use")
    authenticates_itself = True  # the API key (see mosaic.schema)
    parser_classes = [LimitedJSONParser]  # OpenAI's API takes JSON bodies only

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        if getattr(exc, "retry_after", None) is not None:  # RateLimited, EngineUnavailable, KeyInUse
            response["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, quotas.RateLimited):
            for name, value in exc.headers.items():
                response[name] = value
        return response


# --- /v1/models ---------------------------------------------------------------------------------------------


def model_object(system: ComposedSystem) -> dict:
    return {
        "id": system.slug,
        "object": "model",
        "created": int(system.created_at.timestamp()),
        "owned_by": system.owner_organization.slug if system.owner_organization_id else "mosaic",
        "name": system.name,
        "description": system.description,
        "base_model": system.base_model.name,
        "strategy": system.strategy,
        "experts": [
            {"id": str(m.expert_id), "slug": m.expert.slug, "contributor": m.expert.owner.display_name,
             "version": m.version.number}
            for m in system.memberships.all()
        ],
        "quality": system.quality,
        "price_per_1k_tokens_minor": system.price_per_1k_tokens_minor,
        "license_summary": system.license_summary,
        "supported_parameters": list(openai_params.SUPPORTED_PARAMETERS),
    }


class ModelListApi(OpenAIView):
    @extend_schema(summary="The systems this organization may call (OpenAI list of models)",
                   responses=ModelListSerializer, operation_id="v1_models_list")
    def get(self, request):
        systems = systems_callable_by(organization=request.auth.organization)
        return Response({"object": "list", "data": [model_object(s) for s in systems]})


class ModelDetailApi(OpenAIView):
    @extend_schema(summary="One model (system)", responses=ModelSerializer)
    def get(self, request, model: str):
        return Response(model_object(system_for_organization(organization=request.auth.organization, slug=model)))


# --- completions --------------------------------------------------------------------------------------------


@extend_schema_field({"oneOf": [{"type": "string", "minLength": 1},
                                {"type": "array", "items": {"type": "string", "minLength": 1},
                                 "maxItems": contract.MAX_STOP_SEQUENCES}]})
class StopField(serializers.Field):
    def to_internal_value(self, data):
        try:
            return contract.checked_stop(data)
        except contract.ParamError as error:
            raise serializers.ValidationError(error.message) from None


class StrictInteger(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("A JSON integer is required.")
        return super().to_internal_value(data)


class StrictFloat(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise serializers.ValidationError("A JSON number is required.")
        return super().to_internal_value(data)


@extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1,
                      "nullable": True})
class TopPField(StrictFloat):
    """top_p is in (0, 1]: the schema says so; contract.sampling_params refuses 0."""


class StrictBoolean(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            raise serializers.ValidationError("A JSON boolean is required.")
        return data


class StrictString(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("A JSON string is required.")
        return super().to_internal_value(data)


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = StrictBoolean(required=False, default=False)


def default_max_tokens(*, chat: bool) -> int:
    """OpenAI's defaults: a legacy completion stops at 16 tokens; a chat answer runs to its end of turn, which
    here means up to the server's MAX_TOKENS_LIMIT (a chat answer cut at 16 tokens cut the demo's JSON)."""
    return settings.MAX_TOKENS_LIMIT if chat else 16


class CompletionParamsSerializer(serializers.Serializer):
    model = StrictString()
    max_tokens = StrictInteger(required=False, min_value=1, allow_null=True)
    max_completion_tokens = StrictInteger(required=False, min_value=1, allow_null=True)
    temperature = StrictFloat(required=False, min_value=0, max_value=contract.TEMPERATURE_MAX, default=1.0,
                              allow_null=True)
    top_p = TopPField(required=False, min_value=0, max_value=1, default=1.0, allow_null=True)
    stop = StopField(required=False, allow_null=True, default=None)
    n = StrictInteger(required=False, min_value=1, max_value=contract.MAX_CHOICES, default=1, allow_null=True)
    seed = StrictInteger(required=False, min_value=contract.SEED_MIN, max_value=contract.SEED_MAX,
                         allow_null=True, default=None)
    stream = StrictBoolean(required=False, default=False)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True, default=None)
    presence_penalty = StrictFloat(required=False, min_value=-contract.PENALTY_LIMIT,
                                   max_value=contract.PENALTY_LIMIT, allow_null=True, default=None)
    frequency_penalty = StrictFloat(required=False, min_value=-contract.PENALTY_LIMIT,
                                    max_value=contract.PENALTY_LIMIT, allow_null=True, default=None)
    logit_bias = serializers.DictField(child=serializers.JSONField(), required=False, allow_null=True,
                                       default=None)
    response_format = serializers.JSONField(required=False, allow_null=True, default=None)
    user = StrictString(required=False, allow_null=True, default=None)  # the caller's end user; not used

    def validate(self, attrs):
        """The rules of gpu_workers.contract, checked again by the worker: a 400 naming the parameter."""
        attrs["max_tokens"] = (attrs.get("max_completion_tokens") or attrs.get("max_tokens")
                               or default_max_tokens(chat="messages" in attrs))
        try:
            contract.checked_text(attrs["model"], "model")
            params = openai_params.worker_params(attrs, chat="messages" in attrs)
            attrs["sampling"] = contract.sampling_params(params, max_tokens_limit=settings.MAX_TOKENS_LIMIT)
            if "messages" in attrs:
                contract.checked_messages(attrs["messages"])
            if "prompt" in attrs:
                contract.checked_prompt(attrs["prompt"])
        except contract.ParamError as error:
            raise DomainError(error.message, param=error.param, code="invalid_value") from None
        return attrs


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=contract.CHAT_ROLES)
    content = serializers.JSONField(allow_null=True)
    name = StrictString(required=False)
    tool_calls = serializers.JSONField(required=False)
    tool_call_id = StrictString(required=False)

    def validate_content(self, content):
        if content is None or isinstance(content, str):
            return content
        if isinstance(content, list) and all(isinstance(part, dict) for part in content):
            for position, part in enumerate(content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise serializers.ValidationError(
                        f"content[{position}] is a {part.get('type')!r} part; Mosaic's systems read text only "
                        "(text parts, no images, audio or files).")
            return "".join(part["text"] for part in content)
        raise serializers.ValidationError("content must be a string or a list of text parts.")


def attribution_list(*, attribution: dict, members) -> list[dict]:
    by_id = {str(m.expert_id): m.expert for m in members}
    listed = []
    for expert_id, weight in sorted(attribution.items()):
        expert = by_id.get(expert_id)
        listed.append({
            "expert": expert.slug if expert else expert_id,
            "expert_id": expert_id,
            "contributor": expert.owner.display_name if expert else None,
            "license": expert.license.spdx_id if expert and expert.license else None,
            "weight": str(weight),
        })
    return listed


def streamed_or(body) -> dict:
    """A completion's 200: its JSON body, or with stream=true server-sent events (`data: <chunk JSON>` lines,
    then `data: [DONE]`)."""
    return {(200, "application/json"): body, (200, "text/event-stream"): OpenApiTypes.STR}


class _CompletionApi(OpenAIView):
    InputSerializer: type[CompletionParamsSerializer]
    chat: bool
    required_scopes = ("use",)
    error_statuses = (400, 402, 404, 429, 502, 503)

    def post(self, request):
        started = time.monotonic()
        data = self.validated_input(request)
        if "Idempotency-Key" in request.headers:
            return self._serve_once(request, key=request.headers["Idempotency-Key"], started=started, data=data)
        return self._serve(request, started=started, data=data)

    def validated_input(self, request) -> dict:
        """The body, a JSON object naming no parameter Mosaic does not support, through the one validate helper."""
        if not isinstance(request.data, dict):
            raise DomainError("The request body must be a JSON object.")
        openai_params.refuse_unsupported(request.data, accepted=self.InputSerializer().fields)
        return validated(self.InputSerializer, request.data).validated_data

    def _serve_once(self, request, *, key, started, data):
        """Served once per Idempotency-Key; retries get the stored response (marketplace.services.idempotency)."""
        key = idempotency.checked_key(key)
        if data["stream"]:
            raise DomainError("Idempotency-Key cannot be used with stream=true: a stream is not replayed.",
                              param="Idempotency-Key", code="invalid_idempotency_key")
        record, replay = idempotency.claim(organization=request.auth.organization, key=key,
                                           fingerprint=idempotency.fingerprint(path=request.path, body=request.data))
        if replay:
            response = Response(record.response_body, status=record.status_code)
            response["x-request-id"] = record.request_id
            response["Idempotent-Replayed"] = "true"
            return response
        try:
            response = self._serve(request, started=started, data=data)
        except BaseException:
            idempotency.release(record=record)
            raise
        idempotency.complete(record=record, status_code=response.status_code, body=response.data,
                             request_id=response["x-request-id"])
        return response

    def _serve(self, request, *, started, data):
        prepared = completions.completion_prepare(
            api_key=request.auth, model=data["model"], params=data["sampling"], stream=data["stream"],
            started=started, **({"messages": data["messages"]} if self.chat else {"prompt": data["prompt"]}),
            **openai_params.message_extras(data),  # tools, tool_choice, parallel_tool_calls, echo
        )
        if data["stream"]:
            include_usage = bool(data["stream_options"] and data["stream_options"].get("include_usage"))
            response = StreamingHttpResponse(self._stream(prepared, data, include_usage=include_usage),
                                             content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
        else:
            served = completions.completion_run(prepared=prepared)
            response = Response(self._body(served, prepared, data))
            response["x-mosaic-engine-ms"] = str(served.usage.engine_ms)
        for name, value in prepared.reservation.headers.items():
            response[name] = value
        response["x-request-id"] = prepared.request_id
        return response

    def _envelope(self, prepared, *, chunk: bool) -> dict:
        if self.chat:
            obj = "chat.completion.chunk" if chunk else "chat.completion"
            prefix = "chatcmpl-"
        else:
            obj, prefix = "text_completion", "cmpl-"
        return {"id": prefix + prepared.request_id, "object": obj, "created": int(time.time()),
                "model": prepared.system.slug, "system_fingerprint": None}

    @staticmethod
    def _usage(usage) -> dict:
        return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens}

    def _body(self, served, prepared, data) -> dict:
        shape = openai_params.chat_choice if self.chat else openai_params.completion_choice
        choices = [shape(c, data) for c in served.result.choices]
        return {
            **self._envelope(prepared, chunk=False),
            "choices": choices,
            "usage": self._usage(served.usage),
            "attribution": attribution_list(attribution=served.usage.attribution, members=prepared.serving.members),
        }

    def _chunk_choice(self, index: int, text: str | None, finish_reason: str | None, first: bool,
                      final: contract.ChoiceResult | None = None, data: dict | None = None) -> dict:
        """One choice of a chunk; `final`, the finished choice of the result, adds its logprobs and tool calls
        (a stream's last chunk of a choice carries all of them)."""
        if self.chat:
            delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
            chunk = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        else:
            chunk = {"index": index, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        return openai_params.final_chunk_choice(chunk, final, data, chat=self.chat, first=first) if final else chunk

    def _stream(self, prepared, data, *, include_usage: bool):
        envelope = self._envelope(prepared, chunk=True)

        def line(payload: dict) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        started_choices: set[int] = set()
        events = completions.completion_stream(prepared=prepared)
        try:
            for event in events:
                if isinstance(event, completions.Served):
                    for choice in event.result.choices:
                        first = choice.index not in started_choices
                        yield line({**envelope, "choices": [self._chunk_choice(
                            choice.index, None, choice.finish_reason, first, choice, data)]})
                    yield line({**envelope, "choices": [],
                                "usage": self._usage(event.usage) if include_usage else None,
                                "attribution": attribution_list(attribution=event.usage.attribution,
                                                                members=prepared.serving.members)})
                    break
                first = event.choice_index not in started_choices
                started_choices.add(event.choice_index)
                delta = openai_params.echoed(event.text_delta, data, first=first)
                yield line({**envelope, "choices": [self._chunk_choice(event.choice_index, delta, None, first)]})
        except GeneratorExit:  # the client left: the service settles or abandons the request
            events.close()
            raise
        except DomainError as error:
            yield line(error_body(error.message, code=error.code, param=error.param))
        except Exception as error:  # noqa: BLE001 - a stream cannot change its status any more: say it in a data line
            yield line(error_body(f"The engine failed: {type(error).__name__}: {error}", code="engine_error"))
        yield b"data: [DONE]\n\n"


class ChatCompletionApi(_CompletionApi):
    class InputSerializer(CompletionParamsSerializer):
        class Meta:
            ref_name = "ChatCompletionInput"

        messages = MessageSerializer(many=True, allow_empty=False)
        logprobs = StrictBoolean(required=False, allow_null=True, default=None)
        top_logprobs = StrictInteger(required=False, min_value=0, max_value=contract.MAX_TOP_LOGPROBS, allow_null=True,
                                     default=None)
        tools = serializers.ListField(child=serializers.JSONField(), required=False, allow_null=True, default=None)
        tool_choice = serializers.JSONField(required=False, allow_null=True, default=None)
        parallel_tool_calls = StrictBoolean(required=False, allow_null=True, default=None)

    chat = True

    @extend_schema(request=InputSerializer, responses=streamed_or(ChatCompletionSerializer),
                   summary="Chat completion (OpenAI-compatible; stream=true answers with server-sent events)")
    def post(self, request):
        return super().post(request)


class CompletionApi(_CompletionApi):
    class InputSerializer(CompletionParamsSerializer):
        class Meta:
            ref_name = "CompletionInput"

        prompt = StrictString(allow_blank=True, trim_whitespace=False)
        logprobs = StrictInteger(required=False, min_value=0, max_value=contract.MAX_TOP_LOGPROBS, allow_null=True,
                                 default=None)
        echo = StrictBoolean(required=False, default=False)
        best_of = StrictInteger(required=False, min_value=1, allow_null=True, default=None)

    chat = False

    @extend_schema(request=InputSerializer, responses=streamed_or(TextCompletionSerializer),
                   summary="Text completion (OpenAI-compatible; stream=true answers with server-sent events)")
    def post(self, request):
        return super().post(request)
