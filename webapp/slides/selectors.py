from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Count, QuerySet

from webapp.accounts.selectors import user_lab
from webapp.jobs.models import Job
from webapp.slides.models import Slide


def slide_list(*, user: User, patient_id: int | None = None, status: str | None = None) -> QuerySet[Slide]:
    lab = user_lab(user)
    qs = Slide.objects.filter(patient__lab=lab) if lab is not None else Slide.objects.none()
    if patient_id is not None:
        qs = qs.filter(patient_id=patient_id)
    if status in Slide.Status.values:
        qs = qs.filter(status=status)
    return (
        qs.select_related("patient", "uploaded_by", "signed_off_by")
        .prefetch_related("images")
        .annotate(cell_count=Count("cells", distinct=True))
        .order_by("-uploaded_at", "-id")
    )


def slide_latest_job(*, slide: Slide) -> Job | None:
    return Job.objects.filter(key=slide_analyze_key(slide.pk)).order_by("-created_at", "-id").first()


def slide_analyze_key(slide_id: int) -> str:
    return f"analyze:slide:{slide_id}"
