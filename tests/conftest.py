import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from tests.helpers import REPO, reachable


@pytest.fixture
def lab(db):
    from webapp.accounts.services import lab_get_or_create

    return lab_get_or_create(name="Test lab")


@pytest.fixture
def other_lab(db):
    from webapp.accounts.services import lab_get_or_create

    return lab_get_or_create(name="Other lab")


@pytest.fixture
def make_user(db, lab):
    from webapp.accounts.services import user_create

    def make(role: str, username: str | None = None, user_lab=None) -> User:
        return user_create(username=username or role, password="pw-for-tests-123", role=role, lab=user_lab or lab)

    return make


@pytest.fixture
def api_as(make_user):
    """An API client logged in with the given role."""
    from rest_framework.test import APIClient

    def client(role: str | None, **kwargs) -> APIClient:
        c = APIClient()
        if role is not None:
            c.force_authenticate(make_user(role, **kwargs))
        return c

    return client


def _services_missing() -> str | None:
    if connection.vendor != "postgresql":
        return "DATABASE_URL does not point at PostgreSQL"
    if settings.LEUKOLAB_TASKS != "celery" or not settings.REDIS_URL:
        return "REDIS_URL is not set"
    host_port = settings.REDIS_URL.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    if not reachable(host_port[0], int(host_port[1]) if len(host_port) > 1 else 6379):
        return "Redis is not reachable"
    return None


@pytest.fixture
def celery_worker(live_server, tmp_path):
    """A separate Celery worker process on this run's queues, using the live server's test database."""
    reason = _services_missing()
    if reason:
        pytest.skip(reason)
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.config.settings.test",
        DATABASE_URL=f"postgres://{db['USER'] or ''}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        LEUKOLAB_QUEUE_PREFIX=settings.LEUKOLAB_QUEUE_PREFIX,
    )
    log = open(tmp_path / "worker.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "ready." not in (tmp_path / "worker.log").read_text():
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        time.sleep(0.3)
    yield proc, tmp_path / "worker.log"
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()




@pytest.fixture
def job_runner(request, live_server):
    """Whatever runs jobs in this configuration: a real Celery worker when jobs go to Celery."""
    if settings.LEUKOLAB_TASKS == "celery":
        return request.getfixturevalue("celery_worker")
    return None


@pytest.fixture(scope="session")
def cell_folder(tmp_path_factory):
    """A small class-per-folder set of generated cell crops, as the webapp exports them."""
    from PIL import Image

    from ml.classification.data import synthetic_cells

    folder = tmp_path_factory.mktemp("cells")
    cells = synthetic_cells(n_per_class=40, classes=["eosinophil", "lymphocyte", "monocyte", "neutrophil"])
    for i, name in enumerate(cells.names):
        path = folder / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(cells.images[i]).save(path)
    return folder


@pytest.fixture(scope="session")
def classifier_run(cell_folder, tmp_path_factory):
    """A classifier trained briefly by the same function `make run` uses for its default model."""
    from ml.classification import train_default

    return train_default(cell_folder, tmp_path_factory.mktemp("classifier") / "run", time_budget_s=20)


@pytest.fixture
def active_classifier(db, classifier_run):
    """The trained classifier registered as the active version."""
    from ml.classification import load_classifier
    from webapp.registry.services import model_version_register

    clf = load_classifier(classifier_run)
    return model_version_register(
        kind="classifier", architecture=clf.architecture, version=clf.version,
        artifact_path=classifier_run / "best.pt", metrics=clf.metrics, activate=True,
    )
