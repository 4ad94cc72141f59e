"""POST /api/stripe/webhook: Stripe-signed events, each applied once."""
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace import stripe_client
from marketplace.services.billing import stripe_event_apply


class StripeWebhookApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT, summary="Stripe webhook (signed)")
    def post(self, request):
        event = stripe_client.verified_event(
            payload=request.body, signature=request.META.get("HTTP_STRIPE_SIGNATURE", ""),
            secret=settings.STRIPE_WEBHOOK_SECRET,
        )
        return Response({"received": True, "result": stripe_event_apply(event=event)})
