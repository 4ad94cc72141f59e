from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("marketplace.api.catalog_urls")),
    path("api/", include("marketplace.api.organization_urls")),
    path("api/", include("marketplace.api.credit_urls")),
    path("api/ledger/", include("ledger.api.urls")),
    path("v1/", include("marketplace.api.openai_urls")),
    path("", include("marketplace.pages_urls")),
]
