"""Role permissions: Django model permissions, granted to the role groups, checked per endpoint."""
from __future__ import annotations

from rest_framework.permissions import BasePermission


def require(*perms: str) -> type[BasePermission]:
    """A DRF permission class that lets through an authenticated user holding all of ``perms``."""

    class _Require(BasePermission):
        message = "Your role does not allow this."

        def has_permission(self, request, view) -> bool:
            user = request.user
            return bool(user and user.is_authenticated and user.has_perms(perms))

    _Require.__name__ = "Require_" + "_".join(p.split(".")[-1] for p in perms)
    return _Require
