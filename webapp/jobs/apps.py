import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("leukolab.jobs")


class JobsConfig(AppConfig):
    name = "webapp.jobs"
    label = "jobs"

    def ready(self) -> None:
        logger.debug("jobs run %s", "in a Celery worker" if settings.LEUKOLAB_TASKS == "celery" else "in process")
