from django.urls import path

from marketplace.api import catalog

urlpatterns = [
    path("auth/register", catalog.RegisterApi.as_view(), name="api-register"),
    path("auth/token", catalog.TokenApi.as_view(), name="api-token"),
    path("contributors/me", catalog.ContributorMeApi.as_view(), name="api-contributor-me"),
    path("base-models", catalog.BaseModelListApi.as_view(), name="api-base-models"),
    path("base-models/<int:base_model_id>", catalog.BaseModelDetailApi.as_view(), name="api-base-model"),
    path("experts", catalog.ExpertListApi.as_view(), name="api-experts"),
    path("experts/<int:expert_id>", catalog.ExpertDetailApi.as_view(), name="api-expert"),
    path("experts/<int:expert_id>/versions", catalog.ExpertVersionListApi.as_view(), name="api-expert-versions"),
    path("experts/<int:expert_id>/versions/<int:number>", catalog.ExpertVersionDetailApi.as_view(),
         name="api-expert-version"),
    path("experts/<int:expert_id>/license", catalog.ExpertLicenseApi.as_view(), name="api-expert-license"),
]
