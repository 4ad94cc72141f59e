from django.contrib.auth import views as auth_views
from django.urls import include, path

from ledger.api import pages as ledger_pages
from marketplace import organization_pages as org_pages
from marketplace import pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("signup/", pages.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", pages.dashboard, name="dashboard"),
    path("experts/new/", pages.upload, name="expert-upload"),
    path("experts/<id:expert_id>/", pages.expert_detail, name="expert-detail"),
    path("systems/", org_pages.system_catalog, name="systems"),
    path("systems/<slug:slug>/", pages.system_detail, name="system-detail"),
    # organizations
    path("organizations/signup/", org_pages.organization_signup, name="organization-signup"),
    path("organizations/", org_pages.organization_list, name="organizations"),
    path("organizations/<id:organization_id>/", org_pages.organization_detail, name="organization"),
    path("organizations/<id:organization_id>/members/<id:user_id>/remove/", org_pages.member_remove,
         name="organization-member-remove"),
    path("organizations/<id:organization_id>/plan/", org_pages.organization_plan, name="organization-plan"),
    path("organizations/<id:organization_id>/keys/", org_pages.organization_keys, name="organization-keys"),
    path("organizations/<id:organization_id>/keys/<str:prefix>/revoke/", org_pages.organization_key_revoke,
         name="organization-key-revoke"),
    path("organizations/<id:organization_id>/usage/", org_pages.organization_usage, name="organization-usage"),
    path("organizations/<id:organization_id>/invoices/", org_pages.organization_invoices,
         name="organization-invoices"),
    path("keys/", org_pages.my_organization_page, {"page": "keys"}, name="my-keys"),
    path("usage/", org_pages.my_organization_page, {"page": "usage"}, name="my-usage"),
    path("earnings/", pages.earnings, name="earnings"),
    path("experts/<id:expert_id>/consent/<str:action>", pages.expert_consent, name="expert-consent"),
    path("ledger/", include("ledger.api.page_urls")),
    path("transparency/", ledger_pages.transparency, name="transparency"),
]
