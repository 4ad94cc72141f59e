"""The one way an API view reads its input: its nested InputSerializer, validated or a 400 in the one error shape
(mosaic.errors.api_exception_handler)."""
from rest_framework import serializers


def validated(serializer_class: type[serializers.Serializer], data, **kwargs) -> serializers.Serializer:
    """The serializer, valid; its `validated_data` (and any methods of its own) are the view's input."""
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer
