from django.urls import path

from ledger.api import pages

urlpatterns = [
    path("", pages.entry_list, name="ledger-explorer"),
    path("entries/<id:sequence>/", pages.entry_detail, name="ledger-explorer-entry"),
    path("checkpoints/", pages.checkpoint_list, name="ledger-explorer-checkpoints"),
]
