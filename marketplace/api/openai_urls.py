from django.urls import path

from marketplace.api.openai import ChatCompletionApi, CompletionApi, ModelDetailApi, ModelListApi

urlpatterns = [
    path("models", ModelListApi.as_view(), name="v1-models"),
    path("models/<str:model>", ModelDetailApi.as_view(), name="v1-model"),
    path("chat/completions", ChatCompletionApi.as_view(), name="v1-chat-completions"),
    path("completions", CompletionApi.as_view(), name="v1-completions"),
]
