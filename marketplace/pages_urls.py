from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from ledger.api import pages as ledger_pages
from marketplace import pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("signup/", pages.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", pages.dashboard, name="dashboard"),
    path("experts/new/", pages.upload, name="expert-upload"),
    path("experts/<id:expert_id>/", pages.expert_detail, name="expert-detail"),
    path("systems/<slug:slug>/", pages.system_detail, name="system-detail"),
    path("earnings/", pages.earnings, name="earnings"),
    path("experts/<id:expert_id>/consent/<str:action>", pages.expert_consent, name="expert-consent"),
    path("ledger/", include("ledger.api.page_urls")),
    path("transparency/", ledger_pages.transparency, name="transparency"),
    # The pages' own scripts (and the vendored chart library) from the apps' static folders, also when
    # DEBUG is off: the embedded default has no other web server in front of Django.
    re_path(r"^static/(?P<path>.+)$", serve_static, {"insecure": True}),
]
