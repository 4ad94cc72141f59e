from django.urls import path

from ledger.api import views

urlpatterns = [
    path("entries/", views.EntryListView.as_view(), name="ledger-entries"),
    path("entries/<id:sequence>", views.EntryDetailView.as_view(), name="ledger-entry"),
    path("events/<id:event_id>", views.EventDetailView.as_view(), name="ledger-event"),
    path("checkpoints/", views.CheckpointListView.as_view(), name="ledger-checkpoints"),
    path("checkpoints/latest", views.LatestCheckpointView.as_view(), name="ledger-checkpoint-latest"),
    path("consistency", views.ConsistencyView.as_view(), name="ledger-consistency"),
    path("export", views.ExportView.as_view(), name="ledger-export"),
    path("verifier-key", views.VerifierKeyView.as_view(), name="ledger-verifier-key"),
    path("keys", views.KeyHistoryView.as_view(), name="ledger-key-history"),
]
