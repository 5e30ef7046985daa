"""The embedded default: SQLite and in-process jobs unless DATABASE_URL / REDIS_URL say otherwise."""
from webapp.config.env import env, env_bool, local_secret_key
from webapp.config.settings.base import *  # noqa: F401,F403
from webapp.config.settings.base import STATIC_ROOT, VAR_DIR

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY") or local_secret_key(VAR_DIR)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
