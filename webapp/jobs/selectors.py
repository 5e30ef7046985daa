from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from webapp.accounts.selectors import user_lab
from webapp.jobs.models import Job


def job_list(*, user: User, status: str | None = None) -> QuerySet[Job]:
    lab = user_lab(user)
    qs = Job.objects.filter(lab=lab) if lab is not None else Job.objects.none()
    if status in Job.Status.values:
        qs = qs.filter(status=status)
    return qs
