"""Settings for the test suite: the same stack, fast password hashing, files under a temporary folder."""
import os
import tempfile
import uuid
from pathlib import Path

# Before the base settings read it: this run's own Celery queues, shared with the worker it starts.
os.environ.setdefault("LEUKOLAB_QUEUE_PREFIX", f"test-{uuid.uuid4().hex[:8]}-")

from webapp.config.env import env  # noqa: E402
from webapp.config.settings.base import *  # noqa: F401,F403
from webapp.config.settings.base import DATABASES

SECRET_KEY = env("SECRET_KEY", "leukolab-test-only-secret-key-not-for-production-use-0123456789")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
_tmp = Path(env("LEUKOLAB_TEST_DIR") or tempfile.mkdtemp(prefix="leukolab-test-"))
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(_tmp / "media")))
STATIC_ROOT = _tmp / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
LEUKOLAB_MODEL_DIR = _tmp / "models"
LEUKOLAB_MODEL_CACHE = _tmp / "model-cache"
os.environ.setdefault("LEUKOLAB_TEST_DIR", str(_tmp))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that in-process job threads see the test's rows.
    DATABASES["default"]["TEST"] = {"NAME": str(_tmp / "test.sqlite3")}
