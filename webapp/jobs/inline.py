"""The embedded default's job runner: small thread pools inside the web process.

Trainings (the jobs Celery routes to the ``training`` queue) run in a pool of their own, one at a time, as
a training worker takes them: a 20-minute training leaves analyses and answers to run beside it."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connections

logger = logging.getLogger("leukolab.jobs")
_lock = threading.Lock()
_executors: dict[str, ThreadPoolExecutor] = {}
_pending: set[Future] = set()


def pool_of(kind: str) -> str:
    """``training`` for a kind of job Celery routes to the training queue, else ``jobs``."""
    from webapp.jobs.selectors import training_job_kinds

    return "training" if kind in training_job_kinds() else "jobs"


def _run(job_id: int) -> None:
    from webapp.jobs.services import job_execute

    close_old_connections()
    try:
        job_execute(job_id=job_id)
    except Exception:  # job_execute records the failure on the job; this keeps the pool alive
        logger.exception("in-process job %s failed", job_id)
    finally:
        connections.close_all()  # this thread's: an idle pool holds no database session open


def submit(job_id: int, pool: str = "jobs") -> None:
    with _lock:
        executor = _executors.get(pool)
        if executor is None:
            workers = 1 if pool == "training" else settings.LEUKOLAB_INLINE_WORKERS
            executor = _executors[pool] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"leukolab-{pool}")
        future = executor.submit(_run, job_id)
        _pending.add(future)
        future.add_done_callback(_pending.discard)


def wait_idle(timeout: float | None = None) -> bool:
    """Block until every submitted job has finished (used by tests and at shutdown)."""
    from concurrent.futures import wait

    with _lock:
        futures = list(_pending)
    done, not_done = wait(futures, timeout=timeout)
    return not not_done
