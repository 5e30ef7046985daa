"""The embedded default's job runner: a small thread pool inside the web process."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger("leukolab.jobs")
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future] = set()


def _run(job_id: int) -> None:
    from webapp.jobs.services import job_execute

    close_old_connections()
    try:
        job_execute(job_id=job_id)
    except Exception:  # job_execute records the failure on the job; this keeps the pool alive
        logger.exception("in-process job %s failed", job_id)
    finally:
        close_old_connections()


def submit(job_id: int) -> None:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=settings.LEUKOLAB_INLINE_WORKERS, thread_name_prefix="leukolab-job")
        future = _executor.submit(_run, job_id)
        _pending.add(future)
        future.add_done_callback(_pending.discard)


def wait_idle(timeout: float | None = None) -> bool:
    """Block until every submitted job has finished (used by tests and at shutdown)."""
    from concurrent.futures import wait

    with _lock:
        futures = list(_pending)
    done, not_done = wait(futures, timeout=timeout)
    return not not_done
