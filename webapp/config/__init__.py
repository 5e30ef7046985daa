# The Celery app is loaded with Django so that tasks bind to it.
from worker.celery_app import app as celery_app

__all__ = ["celery_app"]
