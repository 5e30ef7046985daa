"""The real thing: HTTP upload, Postgres, the Redis broker and a separate Celery worker process."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection

from tests.helpers import REPO, iou, reachable, smear_field
from tests.live import ApiSession

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


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


def test_uploaded_field_is_analysed_by_the_celery_worker(live_server, celery_worker):
    from webapp.accounts.services import lab_get_or_create, user_create
    from webapp.jobs.models import Job

    proc, worker_log = celery_worker
    user_create(username="hema", password="pw-for-tests-123", role="hematologist", lab=lab_get_or_create(name="Lab"))
    api = ApiSession(live_server.url)
    api.login("hema", "pw-for-tests-123")
    patient = api.post("/api/patients/", json={"identifier": "PIPE-1"}).json()
    name, data, truth = smear_field(0)
    r = api.post("/api/slides/", data={"patient": patient["id"]}, files=[("images", (name, data))])
    assert r.status_code == 201, r.text
    slide = api.wait_for_slide(r.json()["id"], timeout=180)
    assert slide["status"] == "analyzed", (slide["error"], worker_log.read_text()[-3000:])

    job = Job.objects.get(pk=slide["job"]["id"])
    assert job.celery_id, "the job went through the broker"
    assert f"Task slide_analyze[{job.celery_id}] received" in worker_log.read_text()
    assert proc.pid != os.getpid() and proc.poll() is None

    cells = api.get(f"/api/slides/{slide['id']}/cells/").json()
    assert cells, "the worker stored no cell"
    best = max(iou(c["box"], truth[0]) for c in cells)
    assert best >= 0.5, f"best IoU with the annotated WBC is {best:.2f}"
