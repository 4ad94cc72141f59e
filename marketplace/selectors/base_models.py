"""Registered base models (reads)."""
from django.db.models import QuerySet

from marketplace.models import BaseModel
from domain.errors import NotFound


def base_model_list() -> QuerySet:
    return BaseModel.objects.order_by("name")


def base_model_get(*, base_model_id) -> BaseModel:
    base_model = BaseModel.objects.filter(pk=base_model_id).first()
    if base_model is None:
        raise NotFound(f"No base model {base_model_id}.")
    return base_model
