"""Gunicorn settings for the web process (``make run`` and production)."""
import os

bind = os.environ.get("LEUKOLAB_BIND", "127.0.0.1:8000")
# Jobs of the embedded default run inside the web process: keep one process so there is one job runner.
_inline = not os.environ.get("REDIS_URL") and os.environ.get("LEUKOLAB_TASKS", "inline") == "inline"
workers = 1 if _inline else int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 300  # large scans take a while to upload
# longer than the pages' 1-2 s polling: a client reusing a connection finds it open, not just closed
keepalive = 5
accesslog = "-"
errorlog = "-"


def post_worker_init(worker):
    from django.conf import settings

    if settings.LEUKOLAB_TASKS == "inline":
        from webapp.jobs.services import jobs_requeue_stale

        n = jobs_requeue_stale()
        worker.log.info("jobs run in this process (no REDIS_URL); %d unfinished job(s) picked up again", n)
    else:
        worker.log.info("jobs run in Celery workers via %s", settings.CELERY_BROKER_URL.split("@")[-1])
