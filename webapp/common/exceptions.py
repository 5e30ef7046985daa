"""One error shape for the whole API: ``{"message": ..., "extra": {...}}``."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A request that can't be carried out, explained to the user (HTTP 400 unless told otherwise)."""

    def __init__(self, message: str, *, extra: dict | None = None, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.status_code = status_code


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            msg = _first_message(value)
            return msg if key in ("non_field_errors", "detail", "__all__") else f"{key}: {msg}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


def _refused_request(exc: SuspiciousOperation) -> str:
    if isinstance(exc, TooManyFilesSent):
        return (f"Too many files in one request (at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES}); "
                "send them in several.")
    if isinstance(exc, TooManyFieldsSent):
        return f"Too many fields in one request (at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})."
    if isinstance(exc, RequestDataTooBig):
        return "The request's fields are too large."
    return "The request was refused as malformed."


def api_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response({"message": exc.message, "extra": exc.extra}, status=exc.status_code)
    if isinstance(exc, SuspiciousOperation):  # raised while the request's body is read
        return Response({"message": _refused_request(exc), "extra": {}}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"message": _first_message(detail), "extra": {"fields": detail}}
    else:
        message = detail.get("detail", str(exc)) if isinstance(detail, dict) else str(detail)
        response.data = {"message": str(message), "extra": {}}
    if response.status_code == status.HTTP_403_FORBIDDEN and isinstance(exc, exceptions.NotAuthenticated):
        response.data["message"] = "Log in first."
    return response
