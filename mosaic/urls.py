from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from mosaic.converters import DatabaseIdConverter
from mosaic.health import healthz, readyz
from mosaic.metrics import metrics_view

register_converter(DatabaseIdConverter, "id")  # before the includes below import their URL modules

handler404 = "mosaic.errors.not_found"
handler500 = "mosaic.errors.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: no inline script under the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # ReDoc injects its styles at run time and searches in a blob: worker: this page alone allows both.
    path("api/redoc/", csp_update({"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
        SpectacularRedocView.as_view(url_name="schema")), name="api-redoc"),
    path("api/", include("marketplace.api.catalog_urls")),
    path("api/", include("marketplace.api.organization_urls")),
    path("api/", include("marketplace.api.credit_urls")),
    path("api/ledger/", include("ledger.api.urls")),
    path("v1/", include("marketplace.api.openai_urls")),
    path("", include("marketplace.security_urls")),  # account security (issue 22)
    path("", include("marketplace.pages_urls")),
]
