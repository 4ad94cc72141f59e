from django.urls import path

from marketplace.api import organizations, systems
from marketplace.api.stripe_webhooks import StripeWebhookApi

urlpatterns = [
    path("organizations", organizations.OrganizationListApi.as_view(), name="organizations"),
    path("organizations/<id:organization_id>", organizations.OrganizationDetailApi.as_view(), name="organization"),
    path("organizations/<id:organization_id>/members", organizations.MemberListApi.as_view(), name="organization-members"),
    path("organizations/<id:organization_id>/members/<id:user_id>", organizations.MemberDetailApi.as_view(),
         name="organization-member"),
    path("organizations/<id:organization_id>/keys", organizations.APIKeyListApi.as_view(), name="organization-keys"),
    path("organizations/<id:organization_id>/keys/<str:prefix>/revoke", organizations.APIKeyRevokeApi.as_view(),
         name="organization-key-revoke"),
    path("organizations/<id:organization_id>/subscription", organizations.SubscriptionApi.as_view(),
         name="organization-subscription"),
    path("organizations/<id:organization_id>/invoices", organizations.InvoiceListApi.as_view(),
         name="organization-invoices"),
    path("organizations/<id:organization_id>/usage", organizations.UsageApi.as_view(), name="organization-usage"),
    path("plans", organizations.PlanListApi.as_view(), name="plans"),
    path("systems", systems.SystemListApi.as_view(), name="systems"),
    path("systems/<id:system_id>", systems.SystemDetailApi.as_view(), name="system"),
    path("stripe/webhook", StripeWebhookApi.as_view(), name="stripe-webhook"),
]
