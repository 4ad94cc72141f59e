from django.urls import path

from marketplace.api import catalog

urlpatterns = [
    path("auth/register", catalog.RegisterApi.as_view(), name="api-register"),
    path("auth/token", catalog.TokenApi.as_view(), name="api-token"),
    path("contributors/me", catalog.ContributorMeApi.as_view(), name="api-contributor-me"),
    path("base-models", catalog.BaseModelListApi.as_view(), name="api-base-models"),
    path("base-models/<id:base_model_id>", catalog.BaseModelDetailApi.as_view(), name="api-base-model"),
    path("experts", catalog.ExpertListApi.as_view(), name="api-experts"),
    path("experts/<id:expert_id>", catalog.ExpertDetailApi.as_view(), name="api-expert"),
    path("experts/<id:expert_id>/versions", catalog.ExpertVersionListApi.as_view(), name="api-expert-versions"),
    path("experts/<id:expert_id>/versions/<id:number>", catalog.ExpertVersionDetailApi.as_view(),
         name="api-expert-version"),
    path("experts/<id:expert_id>/license", catalog.ExpertLicenseApi.as_view(), name="api-expert-license"),
    path("experts/<id:expert_id>/revoke-consent", catalog.ExpertRevokeConsentApi.as_view(),
         name="expert-revoke-consent"),
    path("experts/<id:expert_id>/restore-consent", catalog.ExpertRestoreConsentApi.as_view(),
         name="expert-restore-consent"),
]
