"""Settings shared by every environment. Environment variables are listed in the README."""
from __future__ import annotations

from pathlib import Path

import dj_database_url

from webapp.config.env import BASE_DIR, env, env_cells, env_fraction, env_int, env_list

VAR_DIR = Path(env("LEUKOLAB_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "webapp.common",
    "webapp.accounts",
    "webapp.patients",
    "webapp.registry",
    "webapp.jobs",
    "webapp.slides",
    "webapp.cells",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.config.urls"
WSGI_APPLICATION = "webapp.config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'leukolab.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web threads and in-process jobs write to the same file: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
FRONTEND_DIST = BASE_DIR / "frontend" / "dist"
STATICFILES_DIRS = [FRONTEND_DIST] if FRONTEND_DIST.is_dir() else []
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"

# Uploads: a request body limit, a per-file limit and a pixel limit against decompression bombs.
LEUKOLAB_MAX_UPLOAD_BYTES = env_int("LEUKOLAB_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)
LEUKOLAB_MAX_IMAGE_PIXELS = env_int("LEUKOLAB_MAX_IMAGE_PIXELS", 20_000 * 20_000)
LEUKOLAB_MAX_FILES_PER_UPLOAD = env_int("LEUKOLAB_MAX_FILES_PER_UPLOAD", 50)
LEUKOLAB_PREVIEW_MAX_SIDE = env_int("LEUKOLAB_PREVIEW_MAX_SIDE", 4096)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None

# Machine learning: where trained runs live, and the classifier bootstrapped on a first start.
LEUKOLAB_MODEL_DIR = Path(env("LEUKOLAB_MODEL_DIR", str(VAR_DIR / "models")))
LEUKOLAB_MODEL_CACHE = Path(env("LEUKOLAB_MODEL_CACHE", str(VAR_DIR / "model-cache")))
LEUKOLAB_DATASETS = Path(env("LEUKOLAB_DATASETS", str(BASE_DIR.parent / "shared" / "datasets")))
LEUKOLAB_TRAIN_DATA = env("LEUKOLAB_TRAIN_DATA")  # a class-per-folder image folder; PBC by default
LEUKOLAB_HEATMAPS = env("LEUKOLAB_HEATMAPS", "1") not in {"0", "false", "no"}
# Expected class frequencies of the analysed cells (ml.classification.priors): "blood" (a normal
# peripheral-blood differential), "uniform" (the classifier as trained) or a JSON file.
LEUKOLAB_CLASS_PRIOR = env("LEUKOLAB_CLASS_PRIOR", "blood")
# Each slide's own class frequencies, estimated from its cells with the prior counting as this many
# cells (ml.classification.priors.adapt), or "off": the prior alone.
LEUKOLAB_CLASS_ADAPT = env_cells("LEUKOLAB_CLASS_ADAPT", "off")
# The classifier's normalization statistics moved towards those of each slide's cells (drawn to a
# balanced class mix), the trained ones counting as this many cells (ml.classification.sample_norm),
# or "off".
LEUKOLAB_CLASS_NORM = env_cells("LEUKOLAB_CLASS_NORM", "1000")
# A cell whose class the model gives with a confidence under this is shown and counted as
# "unidentified" until a person classes it, as digital-morphology analyzers do ("off": never).
LEUKOLAB_UNIDENTIFIED_BELOW = env_fraction("LEUKOLAB_UNIDENTIFIED_BELOW", "0.5")
# Classes that are not white cells (nucleated red cells, platelets): counted beside the differential, per
# 100 white cells, and not in its percentages; comma-separated, any case.
LEUKOLAB_NOT_WHITE = frozenset(name.lower() for name in env_list("LEUKOLAB_NOT_WHITE", ["erythroblast", "platelet"]))
# Seconds a retraining of the classifier (the Models page, or a schedule) may train for.
LEUKOLAB_RETRAIN_BUDGET_S = env_int("LEUKOLAB_RETRAIN_BUDGET_S", 480)
# The deep detector trained on the Models page: the annotated fields it starts from (a VOC, COCO or YOLO
# folder; BCCD by default: its training part, the test part scores it) and the seconds it may train for.
LEUKOLAB_DETECTOR_DATA = env("LEUKOLAB_DETECTOR_DATA")
LEUKOLAB_DETECTOR_BUDGET_S = env_int("LEUKOLAB_DETECTOR_BUDGET_S", 1200)
LEUKOLAB_TORCH_THREADS = env_int("LEUKOLAB_TORCH_THREADS", 1)  # per job process; raise it on big machines

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "webapp.common.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Leukolab API",
    "DESCRIPTION": "Upload blood smears, find and classify white cells, review and sign off.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

from webapp.config.settings.celery import *  # noqa: E402,F401,F403
from webapp.config.settings.storages import *  # noqa: E402,F401,F403
