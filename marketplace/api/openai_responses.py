"""The bodies /v1 answers with, as the OpenAPI schema publishes them (OpenAI's shapes, plus Mosaic's
attribution and model fields). The views build these bodies (marketplace.api.openai,
marketplace.services.openai_params); these serializers only describe them, and tests/test_schema_truth.py
checks real responses against the published schema."""
from rest_framework import serializers


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)


class AttributionSerializer(serializers.Serializer):
    expert = serializers.CharField(help_text="The expert's slug.")
    expert_id = serializers.CharField()
    contributor = serializers.CharField(allow_null=True)
    license = serializers.CharField(allow_null=True, help_text="The expert's license (SPDX id).")
    weight = serializers.CharField(help_text="The expert's share of this request, a decimal string; the shares of a "
                                             "response add up to 1.")


class AlternativeLogprobSerializer(serializers.Serializer):
    token = serializers.CharField()
    logprob = serializers.FloatField()
    bytes = serializers.ListField(child=serializers.IntegerField(min_value=0, max_value=255))


class TokenLogprobSerializer(AlternativeLogprobSerializer):
    top_logprobs = AlternativeLogprobSerializer(many=True)


class ChatLogprobsSerializer(serializers.Serializer):
    content = TokenLogprobSerializer(many=True)
    refusal = serializers.CharField(allow_null=True)


class FunctionCallSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="The call's arguments as a JSON text.")


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionCallSerializer()


class AssistantMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_null=True, help_text="The answer; null when it is a tool call.")
    refusal = serializers.CharField(allow_null=True)
    tool_calls = ToolCallSerializer(many=True, required=False)


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0)
    message = AssistantMessageSerializer()
    finish_reason = serializers.CharField(help_text="stop, length, tool_calls, or cancelled.")
    logprobs = ChatLogprobsSerializer(allow_null=True)


class _CompletionEnvelope(serializers.Serializer):
    id = serializers.CharField()
    created = serializers.IntegerField(help_text="Unix time.")
    model = serializers.CharField(help_text="The system's slug.")
    system_fingerprint = serializers.CharField(allow_null=True)
    usage = UsageSerializer()
    attribution = AttributionSerializer(many=True)


class ChatCompletionSerializer(_CompletionEnvelope):
    class Meta:
        ref_name = "ChatCompletion"

    object = serializers.ChoiceField(choices=["chat.completion"])
    choices = ChatChoiceSerializer(many=True)


class CompletionLogprobsSerializer(serializers.Serializer):
    tokens = serializers.ListField(child=serializers.CharField())
    token_logprobs = serializers.ListField(child=serializers.FloatField(allow_null=True),
                                           help_text="null for an echoed prompt's first token when nothing precedes it "
                                                     "(a tokenizer that adds no <bos>).")
    top_logprobs = serializers.ListField(child=serializers.DictField(child=serializers.FloatField(), allow_null=True))
    text_offset = serializers.ListField(child=serializers.IntegerField(min_value=0))


class CompletionChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0)
    text = serializers.CharField()
    finish_reason = serializers.CharField(help_text="stop, length, or cancelled.")
    logprobs = CompletionLogprobsSerializer(allow_null=True)


class TextCompletionSerializer(_CompletionEnvelope):
    class Meta:
        ref_name = "TextCompletion"

    object = serializers.ChoiceField(choices=["text_completion"])
    choices = CompletionChoiceSerializer(many=True)


class ModelExpertSerializer(serializers.Serializer):
    id = serializers.CharField()
    slug = serializers.CharField()
    contributor = serializers.CharField()
    version = serializers.IntegerField(min_value=1)


class ModelSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Model"

    id = serializers.CharField(help_text="The system's slug, the `model` a completion names.")
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField(help_text="Unix time.")
    owned_by = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    base_model = serializers.CharField()
    strategy = serializers.CharField()
    experts = ModelExpertSerializer(many=True)
    quality = serializers.DictField(help_text="The latest evaluation's summary (empty before one).")
    price_per_1k_tokens_minor = serializers.IntegerField(
        min_value=0, allow_null=True, help_text="The system's own price; null: the plan's metered price.")
    license_summary = serializers.DictField()
    supported_parameters = serializers.ListField(child=serializers.CharField())


class ModelListSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ModelList"

    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)
