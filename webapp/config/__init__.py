import os

# torch's OpenMP threads spin while waiting by default, which starves other work on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The Celery app is loaded with Django so that tasks bind to it.
from worker.celery_app import app as celery_app

__all__ = ["celery_app"]
