"""A page size is a whole number from 1 to max_page_size; anything else is a 400 (DRF's own paginators quietly
fall back to the default page size, so `page_size=abc` was accepted)."""
import re

from rest_framework.exceptions import ValidationError

_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


class StrictPageSizeMixin:
    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param) if self.page_size_query_param else None
        if raw is None:
            return self.page_size
        if not _WHOLE_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= self.max_page_size:
            limit = self.max_page_size
            raise ValidationError(
                {self.page_size_query_param: f"must be a whole number from 1 to {limit}, not {raw[:20]!r}."}
            )
        return int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters
