"""The real thing: HTTP upload, Postgres, the Redis broker and a separate Celery worker process."""
from __future__ import annotations

import os

import pytest

from tests.helpers import iou, smear_field
from tests.live import ApiSession

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_uploaded_field_is_analysed_by_the_celery_worker(live_server, celery_worker, active_classifier):
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
    # classified by the active version, loaded by the worker from the shared storage
    for cell in cells:
        assert cell["model_version"] == active_classifier.version
        assert cell["predicted_class"] in cell["probabilities"] and cell["confidence"] > 0
        heatmap = api.get(cell["heatmap_url"])
        assert heatmap.status_code == 200 and heatmap.content[:4] == b"\x89PNG"
