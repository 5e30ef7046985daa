"""The real thing: HTTP upload, Postgres, the Redis broker and a separate Celery worker process."""
from __future__ import annotations

import os
import time

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

    # a box drawn by an annotator: the worker answers for it through the broker too
    user_create(username="anno", password="pw-for-tests-123", role="annotator", lab=lab_get_or_create(name="Lab"))
    api = ApiSession(live_server.url)
    api.login("anno", "pw-for-tests-123")
    x0, y0, x1, y1 = cells[0]["box"]
    r = api.post(f"/api/slides/{slide['id']}/cells/", json={"image": cells[0]["image"], "box": [x0, y0, x1 - 4, y1 - 4]})
    assert r.status_code == 201 and r.json()["model_pending"] is True, r.text
    drawn = r.json()
    deadline = time.monotonic() + 60
    while drawn["model_pending"] and time.monotonic() < deadline:
        time.sleep(0.3)
        drawn = api.get(f"/api/cells/{drawn['id']}/").json()
    assert not drawn["model_pending"], worker_log.read_text()[-3000:]
    assert drawn["model_version"] == active_classifier.version and drawn["predicted_class"] in drawn["probabilities"]
    assert api.get(drawn["heatmap_url"]).content[:4] == b"\x89PNG"
    answer = Job.objects.get(kind="cell_classify", params__slide_id=slide["id"])
    assert answer.params["cells"] == [{"id": drawn["id"], "box": drawn["box"]}]
    assert answer.celery_id and f"Task cell_classify[{answer.celery_id}] received" in worker_log.read_text()
