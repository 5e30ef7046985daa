"""Celery tasks: each takes a job id, shares its service's name and runs it through ``job_execute``."""
from celery import shared_task
from django.db import InterfaceError, OperationalError

from webapp.jobs.services import job_execute, jobs_redispatch as _jobs_redispatch

_TRANSIENT = (OperationalError, InterfaceError, ConnectionError)


@shared_task(
    name="slide_analyze",
    bind=True,
    autoretry_for=_TRANSIENT,
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=3,
)
def slide_analyze(self, job_id: int) -> None:
    last_try = self.request.retries >= self.max_retries
    job_execute(job_id=job_id, retry_on=() if last_try else _TRANSIENT)


@shared_task(name="cell_classify", bind=True, autoretry_for=_TRANSIENT, retry_backoff=5, retry_backoff_max=120, max_retries=3)
def cell_classify(self, job_id: int) -> None:
    """The model's answer for a box drawn or moved by a person."""
    last_try = self.request.retries >= self.max_retries
    job_execute(job_id=job_id, retry_on=() if last_try else _TRANSIENT)


@shared_task(name="classifier_retrain", bind=True, autoretry_for=_TRANSIENT, retry_backoff=5, retry_backoff_max=120,
             max_retries=3)
def classifier_retrain(self, job_id: int) -> None:
    """The classifier trained again on the training data and the cells people reviewed: a candidate version."""
    last_try = self.request.retries >= self.max_retries
    job_execute(job_id=job_id, retry_on=() if last_try else _TRANSIENT)


@shared_task(name="detector_train", bind=True, autoretry_for=_TRANSIENT, retry_backoff=5, retry_backoff_max=120,
             max_retries=3)
def detector_train(self, job_id: int) -> None:
    """The deep detector trained on the annotated fields and the slides whose boxes people looked at: a candidate."""
    last_try = self.request.retries >= self.max_retries
    job_execute(job_id=job_id, retry_on=() if last_try else _TRANSIENT)


@shared_task(name="classifier_retrain_scheduled")
def classifier_retrain_scheduled() -> int:
    """For a schedule of the admin's (django-celery-beat's periodic tasks): queue a retraining; the job's id."""
    from webapp.registry.services import classifier_retrain_request

    return classifier_retrain_request().pk


@shared_task(name="jobs_redispatch")
def jobs_redispatch() -> int:
    """Scheduled by beat: queued jobs that never reached the broker are handed over again."""
    return _jobs_redispatch()
