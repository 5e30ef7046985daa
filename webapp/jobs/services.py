from __future__ import annotations

import logging
import time
import traceback

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp.jobs.handlers import get_handler
from webapp.jobs.models import Job

logger = logging.getLogger("leukolab.jobs")
OPEN = (Job.Status.QUEUED, Job.Status.RUNNING)


class PermanentJobError(Exception):
    """A job that cannot succeed by retrying; its message is shown to the user."""


def job_enqueue(*, kind: str, key: str, params: dict, lab=None, created_by=None) -> Job:
    """Queue a job once per key: a job with the same key still queued or running is returned instead."""
    existing = Job.objects.filter(key=key, status__in=OPEN).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            job = Job.objects.create(kind=kind, key=key, params=params, lab=lab, created_by=created_by)
    except IntegrityError:
        return Job.objects.get(key=key, status__in=OPEN)
    # robust: the request that queued the job has succeeded whatever happens to the hand-over
    transaction.on_commit(lambda: job_dispatch(job_id=job.pk), robust=True)
    return job


def job_dispatch(*, job_id: int) -> None:
    """Hand a queued job to the configured runner (called after the transaction that created it commits)."""
    if settings.LEUKOLAB_TASKS == "celery":
        from worker import tasks

        job = Job.objects.get(pk=job_id)
        task = getattr(tasks, job.kind)
        try:
            result = task.apply_async(args=[job_id])
        except Exception as exc:  # noqa: BLE001 - the broker is down: the job waits, queued, for jobs_redispatch
            logger.warning("job %s could not be handed to the broker: %s", job_id, exc)
            Job.objects.filter(pk=job_id).update(message="waiting for the job queue to be reachable")
            return
        Job.objects.filter(pk=job_id).update(celery_id=result.id or "", message="")
    elif settings.LEUKOLAB_TASKS == "inline":
        from webapp.jobs import inline

        kind = Job.objects.filter(pk=job_id).values_list("kind", flat=True).first() or ""
        inline.submit(job_id, pool=inline.pool_of(kind))
    else:
        raise RuntimeError(f"LEUKOLAB_TASKS must be 'celery' or 'inline', not {settings.LEUKOLAB_TASKS!r}")


def job_progress(*, job_id: int, progress: float, message: str = "") -> None:
    Job.objects.filter(pk=job_id).update(progress=max(0.0, min(1.0, float(progress))), message=message[:300])


def job_execute(*, job_id: int, retry_on: tuple[type[BaseException], ...] = ()) -> Job:
    """Run a job's handler, keeping its row up to date.

    Errors of the types in ``retry_on`` put the job back in the queue and propagate, for the caller to
    retry; any other error marks the job failed with a readable message.
    """
    job = Job.objects.get(pk=job_id)
    if job.status in (Job.Status.SUCCEEDED, Job.Status.FAILED):
        return job  # a redelivered message for finished work
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.RUNNING, attempts=job.attempts + 1, started_at=timezone.now(), error=""
    )
    started = time.monotonic()
    last = [0.0]

    def progress(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or fraction >= 1.0:  # keep the database writes modest
            last[0] = now
            job_progress(job_id=job_id, progress=fraction, message=message)

    try:
        get_handler(job.kind)(**job.params, job_id=job_id, progress=progress)
    except PermanentJobError as exc:
        job_fail(job_id=job_id, error=str(exc))
    except retry_on as exc:
        logger.warning("job %s (%s) hit a transient error, to be retried: %s", job_id, job.kind, exc)
        Job.objects.filter(pk=job_id).update(status=Job.Status.QUEUED, message=f"retrying after: {exc}"[:300])
        raise
    except Exception as exc:  # noqa: BLE001 - every failure ends up readable on the job
        logger.exception("job %s (%s) failed", job_id, job.kind)
        job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}", details=traceback.format_exc())
    else:
        Job.objects.filter(pk=job_id).update(
            status=Job.Status.SUCCEEDED, progress=1.0, finished_at=timezone.now(), message=f"done in {time.monotonic() - started:.1f} s"
        )
    return Job.objects.get(pk=job_id)


def job_fail(*, job_id: int, error: str, details: str = "") -> None:
    if details:
        logger.debug("job %s details:\n%s", job_id, details)
    Job.objects.filter(pk=job_id).update(status=Job.Status.FAILED, error=error[:2000], finished_at=timezone.now())
    job = Job.objects.get(pk=job_id)
    failure_hook = _FAILURE_HOOKS.get(job.kind)
    if failure_hook is not None:
        failure_hook(job)


def _slide_failed(job: Job) -> None:
    from webapp.slides.services import slide_mark_failed

    slide_mark_failed(slide_id=job.params.get("slide_id"), error=job.error)


_FAILURE_HOOKS = {"slide_analyze": _slide_failed}


def jobs_redispatch(*, older_than_s: float = 60.0) -> int:
    """Hand over again the queued jobs that never reached the broker (it was down when they were made)."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    stale = Job.objects.filter(status=Job.Status.QUEUED, celery_id="", created_at__lt=cutoff)
    ids = list(stale.values_list("pk", flat=True))
    for job_id in ids:
        job_dispatch(job_id=job_id)
    return len(ids)


def jobs_requeue_stale() -> int:
    """Re-dispatch jobs left queued by a stopped process (the embedded runner keeps no queue on disk)."""
    count = 0
    for job in Job.objects.filter(status__in=OPEN):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED, progress=0.0)
        job_dispatch(job_id=job.pk)
        count += 1
    return count
