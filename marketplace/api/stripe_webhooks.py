"""POST /api/stripe/webhook: every Stripe-signed event (billing, Connect, refunds and disputes), each applied once.
/api/stripe/connect-webhook is the same endpoint under the address Connect endpoints were registered with."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace import stripe_client
from marketplace.services.stripe_events import stripe_event_handle


class StripeWebhookApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StripeWebhookOutput"

        received = serializers.BooleanField()
        result = serializers.CharField()

    @extend_schema(request=OpenApiTypes.OBJECT,
                   responses={200: OutputSerializer, 400: OpenApiResponse(description="bad signature or event")},
                   summary="Stripe webhook (signed), dispatched by event type")
    def post(self, request):
        event = stripe_client.verified_event(payload=request.body,
                                             signature=request.META.get("HTTP_STRIPE_SIGNATURE", ""))
        return Response(self.OutputSerializer({"received": True, "result": stripe_event_handle(event=event)}).data)
