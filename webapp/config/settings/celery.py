"""Jobs: a real Celery worker over Redis when REDIS_URL is set, otherwise jobs run in the web process.

The mode is chosen once from the configuration (``LEUKOLAB_TASKS``) and logged at start-up; it never
switches on its own.
"""
from kombu import Queue

from webapp.config.env import env, env_int

REDIS_URL = env("REDIS_URL")
LEUKOLAB_TASKS = env("LEUKOLAB_TASKS", "celery" if REDIS_URL else "inline")
LEUKOLAB_INLINE_WORKERS = env_int("LEUKOLAB_INLINE_WORKERS", 1)

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None  # job state lives in the Job table
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Queues by workload. A prefix keeps separate installations (or test runs) on one Redis apart.
LEUKOLAB_QUEUE_PREFIX = env("LEUKOLAB_QUEUE_PREFIX", "")
LEUKOLAB_QUEUES = {name: f"{LEUKOLAB_QUEUE_PREFIX}{name}" for name in ("inference", "training", "default")}
CELERY_TASK_DEFAULT_QUEUE = LEUKOLAB_QUEUES["default"]
CELERY_TASK_QUEUES = [Queue(q, routing_key=q) for q in LEUKOLAB_QUEUES.values()]
CELERY_TASK_ROUTES = {
    "slide_analyze": {"queue": LEUKOLAB_QUEUES["inference"]},
    "cell_classify": {"queue": LEUKOLAB_QUEUES["inference"]},
    "classifier_retrain": {"queue": LEUKOLAB_QUEUES["training"]},
    "detector_train": {"queue": LEUKOLAB_QUEUES["training"]},
}
CELERY_TASK_ANNOTATIONS = {
    "slide_analyze": {"time_limit": env_int("LEUKOLAB_ANALYZE_TIME_LIMIT", 3600), "soft_time_limit": env_int("LEUKOLAB_ANALYZE_TIME_LIMIT", 3600) - 60},
    "classifier_retrain": {"time_limit": 6 * 3600, "soft_time_limit": 6 * 3600 - 60},
    "detector_train": {"time_limit": 6 * 3600, "soft_time_limit": 6 * 3600 - 60},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {"jobs-redispatch": {"task": "jobs_redispatch", "schedule": 60.0}}
# A broker that is down must not hold an upload for long: give up quickly, jobs_redispatch retries.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TIMEZONE = "UTC"
