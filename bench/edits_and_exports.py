"""Time what follows a person's edits and what hands out training data, on a field and on scans.

    .venv/bin/python -m pytest -s bench/edits_and_exports.py

Per image size (a BCCD field, then BCCD mosaics of 8000 and 20000 pixels a side made by
``bench/large_scan.py``'s ``mosaic``; the embedded SQLite database, files on disk): the model's answer for
one box drawn and then moved by hand (``cell_classify``, the classifier normalized on the slide's
cells), a box file with all the slide's boxes added to a second slide of the same image and the one
job that answers for them, and the exports of the slide's boxes (VOC) and cells (crops). The
classifier is the test suite's (``train_default`` for 20 s on generated cells): the architecture and
input of the served default, so the same time per cell. Prints one line per measurement.
"""
from __future__ import annotations

import io
import sys
import time
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_scan import mosaic  # noqa: E402

from tests.helpers import smear_field  # noqa: E402


def _say(side, what, seconds, extra=""):
    print(f"{side:>7} | {what:<42} | {seconds:7.2f} s {extra}", file=sys.stderr, flush=True)


@pytest.mark.parametrize("side", [0, 8000, 20000])
def test_edits_and_exports(side, patient, active_classifier, make_user, api_as, tmp_path):
    from webapp.cells.models import Cell
    from webapp.cells.services import cell_create, cell_move
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute
    from webapp.slides.services import slide_upload

    if side:
        mosaic(side, tmp_path / "scan.jpg")
        name, data = "scan.jpg", (tmp_path / "scan.jpg").read_bytes()
    else:
        name, data, _ = smear_field(0)
    label = f"{side}²" if side else "field"

    def upload():
        slide, job = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(name, data)])
        return slide, job

    slide, job = upload()
    t = time.perf_counter()
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    n = slide.cells.count()
    _say(label, f"analysis ({n} cells)", time.perf_counter() - t)

    annotator = make_user("annotator", username="ann")
    model_cell = slide.cells.order_by("pk")[n // 2]
    x0, y0, x1, y1 = model_cell.box
    cell = cell_create(image=model_cell.image, box=[x0 + 2, y0 + 2, x1 - 2, y1 - 2], label="", user=annotator)
    for what in ("drawn", "moved"):
        if what == "moved":
            cell = cell_move(cell=cell, box=[x0 + 1, y0 + 1, x1 - 1, y1 - 1], user=annotator)
        job = Job.objects.get(kind="cell_classify", status=Job.Status.QUEUED)
        t = time.perf_counter()
        assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
        _say(label, f"answer for one box {what}", time.perf_counter() - t)
    cell.refresh_from_db()
    assert cell.predicted_class and cell.heatmap

    client = api_as("annotator", username="ann2")
    exported = {}
    for what, url in [("export of the boxes (VOC)", f"/api/exports/boxes/?format=voc&slide={slide.pk}"),
                      ("export of the cells (crops)", f"/api/exports/cells/?slide={slide.pk}&which=all")]:
        t = time.perf_counter()
        r = client.get(url)
        exported[what] = b"".join(r.streaming_content)
        assert r.status_code == 200
        _say(label, what, time.perf_counter() - t, f"{len(exported[what]) / 1e6:.1f} MB")

    zf = zipfile.ZipFile(io.BytesIO(exported["export of the boxes (VOC)"]))
    (xml,) = [x for x in zf.namelist() if x.endswith(".xml")]
    second, _ = upload()
    t = time.perf_counter()
    r = client.post(f"/api/slides/{second.pk}/boxes/", {"files": [SimpleUploadedFile("boxes.xml", zf.read(xml))]},
                    format="multipart")
    assert r.status_code == 200, r.content
    _say(label, f"box file in ({r.json()['added']} boxes)", time.perf_counter() - t)
    job = Job.objects.get(kind="cell_classify", params__slide_id=second.pk)
    t = time.perf_counter()
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    answered = Cell.objects.filter(slide=second).exclude(predicted_class="").count()
    _say(label, f"their answers, one job ({answered} cells)", time.perf_counter() - t)
