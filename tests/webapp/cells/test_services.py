"""Analysis results, review and history of cells."""
import pytest

from tests.helpers import iou, smear_field
from webapp.cells.models import Cell, CellEvent
from webapp.cells.selectors import slide_differential
from webapp.cells.services import cell_delete, cell_move, cell_reclassify
from webapp.common.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.slides.models import Slide
from webapp.slides.services import slide_analyze_request


def test_analysis_finds_the_annotated_white_cell(analyzed_slide):
    _, _, truth = smear_field(0)
    boxes = [c.box for c in analyzed_slide.cells.all()]
    assert analyzed_slide.status == Slide.Status.ANALYZED
    assert boxes, "no cell found"
    assert max(iou(b, truth[0]) for b in boxes) >= 0.5


def test_analyzing_again_replaces_model_cells_without_duplicates(analyzed_slide, make_user):
    first = set(map(tuple, (c.box for c in analyzed_slide.cells.all())))
    job = slide_analyze_request(slide=analyzed_slide, user=None)
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    again = set(map(tuple, (c.box for c in Cell.objects.filter(slide=analyzed_slide))))
    assert again == first


def test_reviewed_cells_survive_reanalysis(analyzed_slide, make_user):
    user = make_user("hematologist", username="reviewer")
    cell = analyzed_slide.cells.first()
    cell_reclassify(cell=cell, label="monocyte", user=user)
    job = slide_analyze_request(slide=analyzed_slide, user=user)
    job_execute(job_id=job.pk)
    assert Cell.objects.filter(pk=cell.pk, reviewed_class="monocyte").exists()


def test_enqueue_is_idempotent_while_queued(slide):
    a = slide_analyze_request(slide=slide, user=None)
    b = slide_analyze_request(slide=slide, user=None)
    assert a.pk == b.pk
    assert Job.objects.filter(key=f"analyze:slide:{slide.pk}").count() == 1


def test_every_change_is_kept_with_who_and_when(analyzed_slide, make_user):
    annotator = make_user("annotator", username="ann")
    cell = analyzed_slide.cells.first()
    old_box = cell.box
    cell_move(cell=cell, box=[1, 2, 30, 40], user=annotator)
    cell_reclassify(cell=cell, label="eosinophil", user=annotator)
    cell_ref = cell.pk
    cell_delete(cell=cell, user=annotator)
    events = list(CellEvent.objects.filter(cell_ref=cell_ref).order_by("id"))
    assert [e.action for e in events] == ["create", "move", "reclassify", "delete"]
    assert events[0].actor is None  # created by the model
    assert all(e.actor == annotator for e in events[1:])
    assert events[1].before["box"] == old_box and events[1].after["box"] == [1, 2, 30, 40]
    assert events[2].after["reviewed_class"] == "eosinophil"
    assert events[3].after is None and not Cell.objects.filter(pk=cell_ref).exists()


def test_box_outside_the_image_is_refused(analyzed_slide, make_user):
    cell = analyzed_slide.cells.first()
    with pytest.raises(ApplicationError, match="not inside"):
        cell_move(cell=cell, box=[0, 0, 5000, 10], user=make_user("annotator", username="a2"))


def test_differential_counts_reviewed_over_predicted(analyzed_slide, make_user):
    user = make_user("hematologist", username="h2")
    cells = list(analyzed_slide.cells.all())
    for cell in cells:
        cell_reclassify(cell=cell, label="lymphocyte", user=user)
    diff = slide_differential(slide=analyzed_slide)
    assert diff == {"total": len(cells), "rows": [{"class": "lymphocyte", "count": len(cells), "percent": 100.0}]}


def test_api_differential_and_cells(api_as, analyzed_slide):
    client = api_as("hematologist", username="h3")
    cells = client.get(f"/api/slides/{analyzed_slide.pk}/cells/").json()
    assert cells and {"box", "class", "probabilities", "confidence", "heatmap_url"} <= set(cells[0])
    diff = client.get(f"/api/slides/{analyzed_slide.pk}/differential/").json()
    assert diff["total"] == len(cells)
    assert abs(sum(r["percent"] for r in diff["rows"]) - 100.0) < 0.2
    history = client.get(f"/api/slides/{analyzed_slide.pk}/history/").json()
    assert history["count"] == len(cells) and history["results"][0]["action"] == "create"


def test_sign_off_freezes_the_slide(api_as, analyzed_slide):
    client = api_as("hematologist", username="h4")
    r = client.post(f"/api/slides/{analyzed_slide.pk}/sign-off/")
    assert r.status_code == 200 and r.json()["signed_off_by"] == "h4"
    again = client.post(f"/api/slides/{analyzed_slide.pk}/analyze/")
    assert again.status_code == 409 and "signed off" in again.json()["message"]


def test_the_slides_pixel_size_sets_the_magnification_of_the_analysis(patient):
    """The same field at 0.4x the trained magnification: with its real pixel size (0.25 µm) the
    analysis boxes the white cell well; told it has the trained pixel size (0.1 µm), far worse."""
    import io

    import cv2
    from django.core.files.uploadedfile import SimpleUploadedFile

    from ml.imageio import load_image
    from tests.helpers import image_bytes
    from webapp.slides.services import slide_upload

    name, data, truth = smear_field(0)

    small = cv2.resize(load_image(io.BytesIO(data)), None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    target = [v * 0.4 for v in truth[0]]
    best = {}
    for mpp in (0.25, 0.1):
        slide, job = slide_upload(user=patient.created_by, patient=patient, microns_per_pixel=mpp,
                                  files=[SimpleUploadedFile("small.png", image_bytes(small))])
        assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
        best[mpp] = max((iou(c.box, target) for c in slide.cells.all()), default=0.0)
    assert best[0.25] >= 0.6 and best[0.25] > best[0.1] + 0.1, best
