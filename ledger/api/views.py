"""Auditors' read-only API over the ledger (hashes as hex in entries, proofs and roots as base64)."""
import base64
import json
import tempfile

from django.http import FileResponse, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger import selectors
from ledger.api.permissions import IsAuditor
from ledger.canonical import format_time
from ledger.export import write_bundle
from ledger.keys import signature_key_ids
from ledger.rotation import key_history
from ledger.signing import ledger_signer
from mosaic.api_input import validated
from domain.errors import NotFound
from mosaic.pagination import StrictPageSizeMixin


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class SequencePagination(StrictPageSizeMixin, CursorPagination):
    ordering = "sequence"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class CheckpointPagination(SequencePagination):
    ordering = "id"


class AuditorView(APIView):
    permission_classes = [IsAuditor]


class EntryListView(AuditorView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "EntryOutput"

        sequence = serializers.IntegerField()
        kind = serializers.CharField()
        actor = serializers.CharField()
        time = serializers.SerializerMethodField()
        payload = serializers.SerializerMethodField()
        prev_hash = serializers.SerializerMethodField()
        entry_hash = serializers.SerializerMethodField()
        leaf_hash = serializers.SerializerMethodField()
        event_id = serializers.IntegerField(allow_null=True, help_text="The recorded event it integrates.")

        def get_time(self, entry) -> str:
            return format_time(entry.created_at)

        def get_payload(self, entry) -> dict:
            return json.loads(bytes(entry.payload))

        def get_prev_hash(self, entry) -> str:
            return bytes(entry.prev_hash).hex()

        def get_entry_hash(self, entry) -> str:
            return bytes(entry.entry_hash).hex()

        def get_leaf_hash(self, entry) -> str:
            return bytes(entry.leaf_hash).hex()

    class InputSerializer(serializers.Serializer):
        kind = serializers.CharField(required=False, max_length=64)
        actor = serializers.CharField(required=False, max_length=200)
        since = serializers.DateTimeField(required=False)
        until = serializers.DateTimeField(required=False)
        sequence_from = serializers.IntegerField(required=False, min_value=0)
        sequence_to = serializers.IntegerField(required=False, min_value=0)

    @extend_schema(operation_id="ledger_entries_list", parameters=[InputSerializer],
                   responses=OutputSerializer(many=True))
    def get(self, request):
        filters = validated(self.InputSerializer, request.query_params).validated_data
        paginator = SequencePagination()
        page = paginator.paginate_queryset(selectors.entry_list(**filters), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class InclusionProofSerializer(serializers.Serializer):
    leaf_index = serializers.IntegerField(min_value=0)
    tree_size = serializers.IntegerField(min_value=1)
    root_hash = serializers.CharField(help_text="base64")
    proof = serializers.ListField(child=serializers.CharField(), help_text="The audit path, base64 hashes (RFC 9162).")
    checkpoint = serializers.CharField(help_text="The signed checkpoint (a signed note) whose root the proof reaches.")


class EntryDetailView(AuditorView):
    OutputSerializer = EntryListView.OutputSerializer

    class ProvenSerializer(EntryListView.OutputSerializer):
        """What the response body is: the entry, its leaf data, and its inclusion proof (schema only)."""

        class Meta:
            ref_name = "EntryWithInclusionProof"

        leaf_data = serializers.CharField(help_text="The bytes the leaf hash is computed from.")
        inclusion = InclusionProofSerializer(allow_null=True, help_text="null until a signed checkpoint covers it.")
        inclusion_pending = serializers.CharField(required=False, help_text="Why inclusion is null.")

    @extend_schema(operation_id="ledger_entry_with_inclusion_proof", responses=ProvenSerializer)
    def get(self, request, sequence: int):
        entry = selectors.entry_get(sequence=sequence)
        checkpoint = selectors.checkpoint_latest()
        body = {**self.OutputSerializer(entry).data, "leaf_data": selectors.entry_leaf_data(entry).decode()}
        if checkpoint is None or checkpoint.tree_size <= entry.sequence:
            body["inclusion"] = None
            body["inclusion_pending"] = "No signed checkpoint covers this entry yet; ask again after the next one."
        else:
            body["inclusion"] = {
                "leaf_index": entry.sequence,
                "tree_size": checkpoint.tree_size,
                "root_hash": b64(bytes(checkpoint.root_hash)),
                "proof": [b64(h) for h in selectors.inclusion_proof(entry=entry, checkpoint=checkpoint)],
                "checkpoint": checkpoint.note,
            }
        return Response(body)


class EventDetailView(AuditorView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "EventOutput"

        id = serializers.IntegerField()
        kind = serializers.CharField()
        actor = serializers.CharField()
        time = serializers.SerializerMethodField()
        payload = serializers.SerializerMethodField()
        content_hash = serializers.SerializerMethodField()

        def get_time(self, event) -> str:
            return format_time(event.created_at)

        def get_payload(self, event) -> dict:
            return json.loads(bytes(event.payload))

        def get_content_hash(self, event) -> str:
            return bytes(event.content_hash).hex()

    class StatusSerializer(OutputSerializer):
        """What the response body is: the event, and whether the sequencer has integrated it (schema only)."""

        class Meta:
            ref_name = "EventWithStatus"

        status = serializers.ChoiceField(choices=["pending", "integrated"])
        sequence = serializers.IntegerField(allow_null=True, help_text="Its entry's sequence once integrated.")

    @extend_schema(operation_id="ledger_event", responses=StatusSerializer)
    def get(self, request, event_id: int):
        """A recorded event: "pending" (no sequence yet) until the sequencer integrates it, then
        "integrated" with its sequence (its entry, with the inclusion proof, is at entries/<sequence>)."""
        event, entry = selectors.event_get(event_id=event_id)
        body = {**self.OutputSerializer(event).data, "status": "pending" if entry is None else "integrated"}
        body["sequence"] = None if entry is None else entry.sequence
        return Response(body)


class CheckpointListView(AuditorView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CheckpointOutput"

        id = serializers.IntegerField()
        origin = serializers.CharField()
        tree_size = serializers.IntegerField()
        root_hash = serializers.SerializerMethodField()
        key_id = serializers.SerializerMethodField(help_text="The signing key's ID (8 hex digits; see /api/ledger/keys).")
        created_at = serializers.DateTimeField()
        note = serializers.CharField()

        def get_root_hash(self, checkpoint) -> str:
            return b64(bytes(checkpoint.root_hash))

        def get_key_id(self, checkpoint) -> str:
            return signature_key_ids(checkpoint.note)[0]

    @extend_schema(operation_id="ledger_checkpoints_list", responses=OutputSerializer(many=True))
    def get(self, request):
        paginator = CheckpointPagination()
        page = paginator.paginate_queryset(selectors.checkpoint_list(), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class LatestCheckpointView(AuditorView):
    @extend_schema(operation_id="ledger_checkpoint_latest", responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request):
        checkpoint = selectors.checkpoint_latest()
        if checkpoint is None:
            raise NotFound("No checkpoint has been signed yet.")
        return HttpResponse(checkpoint.note, content_type="text/plain; charset=utf-8")


class ConsistencyView(AuditorView):
    class InputSerializer(serializers.Serializer):
        first = serializers.IntegerField(min_value=0)
        second = serializers.IntegerField(min_value=0)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ConsistencyProof"

        first = serializers.IntegerField(min_value=0)
        second = serializers.IntegerField(min_value=0)
        first_root = serializers.CharField(help_text="base64")
        second_root = serializers.CharField(help_text="base64")
        proof = serializers.ListField(child=serializers.CharField(), help_text="base64 hashes (RFC 9162).")

    @extend_schema(operation_id="ledger_consistency_proof", parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request):
        sizes = validated(self.InputSerializer, request.query_params).validated_data
        first, second = sizes["first"], sizes["second"]
        first_root, second_root, proof = selectors.consistency_proof(first=first, second=second)
        return Response(
            {
                "first": first, "second": second, "first_root": b64(first_root), "second_root": b64(second_root),
                "proof": [b64(h) for h in proof],
            }
        )


class ExportView(AuditorView):
    @extend_schema(operation_id="ledger_export", responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request):
        bundle = tempfile.TemporaryFile()
        write_bundle(bundle)
        bundle.seek(0)
        return FileResponse(bundle, as_attachment=True, filename="mosaic-ledger.tar.gz", content_type="application/gzip")


class VerifierKeyView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(operation_id="ledger_verifier_key", responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request):
        return HttpResponse(ledger_signer().verifier_key + "\n", content_type="text/plain; charset=utf-8")


class KeyHistoryView(AuditorView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LedgerKeyPeriod"

        verifier_key = serializers.CharField()
        key_id = serializers.CharField(help_text="8 hex digits, as in the signature lines of the notes it signed.")
        first_size = serializers.IntegerField(help_text="The smallest tree size a checkpoint by this key may have.")
        last_size = serializers.IntegerField(allow_null=True, help_text="The largest; null for the key in office.")
        retired_by_entry = serializers.IntegerField(allow_null=True,
                                                    help_text="Sequence of the ledger.key_rotated entry that retired it.")

    @extend_schema(operation_id="ledger_key_history", responses=OutputSerializer(many=True))
    def get(self, request):
        return Response(self.OutputSerializer(key_history().as_list(), many=True).data)

