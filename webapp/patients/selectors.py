from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Count, QuerySet

from webapp.accounts.selectors import user_lab
from webapp.patients.models import Deletion, Patient


def patient_list(*, user: User, search: str | None = None) -> QuerySet[Patient]:
    lab = user_lab(user)
    qs = Patient.objects.filter(lab=lab) if lab is not None else Patient.objects.none()
    if search:
        qs = qs.filter(identifier__icontains=search)
    return qs.annotate(slide_count=Count("slides")).order_by("-created_at", "-id")


def deletion_list(*, user: User) -> QuerySet[Deletion]:
    lab = user_lab(user)
    qs = Deletion.objects.filter(lab=lab) if lab is not None else Deletion.objects.none()
    return qs.select_related("deleted_by").order_by("-deleted_at", "-id")
