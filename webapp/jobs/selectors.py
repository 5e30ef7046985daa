from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet

from webapp.accounts.selectors import user_lab
from webapp.jobs.models import Job


def training_job_kinds() -> list[str]:
    """The kinds of job that train a model: those Celery routes to the ``training`` queue."""
    training = settings.LEUKOLAB_QUEUES["training"]
    return [kind for kind, route in settings.CELERY_TASK_ROUTES.items() if route.get("queue") == training]


def job_list(*, user: User, status: str | None = None) -> QuerySet[Job]:
    """The jobs of the user's lab; for one who may retrain the models (an admin), the trainings too, which
    belong to no lab where a schedule queued them (the models serve every lab)."""
    lab = user_lab(user)
    qs = Job.objects.filter(lab=lab) if lab is not None else Job.objects.none()
    if user.has_perm("registry.add_modelversion"):
        qs = qs | Job.objects.filter(kind__in=training_job_kinds())
    if status in Job.Status.values:
        qs = qs.filter(status=status)
    return qs
