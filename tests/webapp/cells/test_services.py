"""Analysis results, review and history of cells."""
from pathlib import Path

import pytest

from tests.helpers import in_a_thread, iou, needs_row_locks, smear_field
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
    assert diff == {"total": len(cells), "rows": [{"class": "lymphocyte", "count": len(cells), "percent": 100.0}],
                    "other": []}


def test_the_differential_is_of_white_cells_and_counts_nucleated_red_cells_and_platelets_beside_it(
        analyzed_slide, settings):
    """A differential's percentages are of the white cells; a platelet or nucleated red cell the model
    finds is reported beside it, per 100 white cells, as a lab reports it. Before, they took their share
    of the 100 %."""
    image = analyzed_slide.images.first()
    analyzed_slide.cells.all().delete()
    for k, label in enumerate(["neutrophil"] * 3 + ["lymphocyte", "platelet", "Platelet", "erythroblast"]):
        Cell.objects.create(slide=analyzed_slide, image=image, x0=k, y0=0, x1=k + 10, y1=10, source="model",
                            predicted_class=label, probabilities={label: 0.9}, confidence=0.9)
    diff = slide_differential(slide=analyzed_slide)
    assert diff == {
        "total": 4,
        "rows": [{"class": "neutrophil", "count": 3, "percent": 75.0}, {"class": "lymphocyte", "count": 1, "percent": 25.0}],
        "other": [{"class": "Platelet", "count": 1, "per_100_white": 25.0},
                  {"class": "erythroblast", "count": 1, "per_100_white": 25.0},
                  {"class": "platelet", "count": 1, "per_100_white": 25.0}],
    }
    settings.LEUKOLAB_NOT_WHITE = frozenset()  # a lab that counts every class in the differential
    assert slide_differential(slide=analyzed_slide)["total"] == 7
    settings.LEUKOLAB_NOT_WHITE = frozenset({"platelet", "erythroblast"})
    analyzed_slide.cells.filter(predicted_class__in=["neutrophil", "lymphocyte"]).delete()
    nothing_white = slide_differential(slide=analyzed_slide)
    assert nothing_white["total"] == 0 and nothing_white["rows"] == []
    assert {r["per_100_white"] for r in nothing_white["other"]} == {None} and len(nothing_white["other"]) == 3


def test_api_differential_and_cells(api_as, analyzed_slide):
    client = api_as("hematologist", username="h3")
    cells = client.get(f"/api/slides/{analyzed_slide.pk}/cells/").json()
    assert cells and {"box", "class", "probabilities", "confidence", "heatmap_url"} <= set(cells[0])
    diff = client.get(f"/api/slides/{analyzed_slide.pk}/differential/").json()
    assert diff["total"] == len(cells)
    assert abs(sum(r["percent"] for r in diff["rows"]) - 100.0) < 0.2
    history = client.get(f"/api/slides/{analyzed_slide.pk}/history/").json()
    assert history["count"] == len(cells) and history["results"][0]["action"] == "create"


def test_one_cells_history_is_kept_after_it_is_deleted(api_as, analyzed_slide):
    from django.contrib.auth.models import User

    from webapp.cells.services import cell_create

    client, annotator = api_as("hematologist", username="h-history"), api_as("annotator", username="a")
    first = analyzed_slide.cells.order_by("pk").first()
    second = cell_create(image=first.image, box=[1, 1, 30, 30], label="", user=User.objects.get(username="a"),
                         answer=False)
    assert client.patch(f"/api/cells/{first.pk}/", {"reviewed_class": "monocyte"}, format="json").status_code == 200
    assert client.patch(f"/api/cells/{second.pk}/", {"reviewed_class": "monocyte"}, format="json").status_code == 200
    assert annotator.delete(f"/api/cells/{first.pk}/").status_code == 204
    events = client.get(f"/api/slides/{analyzed_slide.pk}/history/?cell={first.pk}").json()["results"]
    assert [e["action"] for e in events] == ["create", "reclassify", "delete"]
    assert {e["cell"] for e in events} == {first.pk} and events[1]["actor"] == "h-history"
    assert events[1]["before"]["reviewed_class"] is None and events[1]["after"]["reviewed_class"] == "monocyte"
    bad = client.get(f"/api/slides/{analyzed_slide.pk}/history/?cell=first")
    assert bad.status_code == 400 and "whole number" in bad.json()["message"]


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


def test_a_scans_cells_are_kept_at_full_resolution_and_a_fields_are_not(slide, api_as, settings):
    """The browser is shown a reduced preview of an image larger than LEUKOLAB_PREVIEW_MAX_SIDE (a scan):
    each analysed cell is then kept cut from the full-resolution image, framed as the page frames it.
    A moved box drops its crop (it showed the box as it was); a deleted cell takes its files along."""
    import io

    import numpy as np
    from PIL import Image

    from ml.boxes import Box
    from ml.classification.crop import cell_crop
    from ml.imageio import load_image
    from webapp.cells.services import CROP_SIDE

    client = api_as("hematologist", username="h5")
    job = Job.objects.get(key=f"analyze:slide:{slide.pk}")
    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 4096  # a 640x480 field is shown as it is: no crops kept
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    cells = client.get(f"/api/slides/{slide.pk}/cells/").json()
    assert cells and all(c["crop_url"] is None for c in cells)
    assert client.get(f"/api/cells/{cells[0]['id']}/crop/").status_code == 404

    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 320  # now the same field is "a scan" shown reduced
    job = slide_analyze_request(slide=slide, user=None)
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    cells = client.get(f"/api/slides/{slide.pk}/cells/").json()
    assert cells and all(c["crop_url"] for c in cells)
    image = slide.images.get()
    with image.file.open("rb") as fh:
        full = load_image(fh)
    for c in cells:
        r = client.get(c["crop_url"])
        assert r.status_code == 200 and r["Content-Type"] == "image/jpeg"
        crop = np.asarray(Image.open(io.BytesIO(b"".join(r.streaming_content))).convert("RGB"), np.int16)
        expected = cell_crop(full, Box(*c["box"]), margin=0.0, out_size=CROP_SIDE).astype(np.int16)
        assert crop.shape == (CROP_SIDE, CROP_SIDE, 3) and np.abs(crop - expected).mean() < 3  # JPEG's error

    from django.contrib.auth.models import User

    user = User.objects.get(username="h5")
    moved = Cell.objects.get(pk=cells[0]["id"])
    path = moved.crop.path
    cell_move(cell=moved, box=[b + 2 for b in cells[0]["box"][:2]] + [b - 2 for b in cells[0]["box"][2:]], user=user)
    listed = {c["id"]: c for c in client.get(f"/api/slides/{slide.pk}/cells/").json()}
    assert listed[moved.pk]["crop_url"] is None
    assert client.get(f"/api/cells/{moved.pk}/crop/").status_code == 404
    import os

    assert not os.path.exists(path)
    if len(cells) > 1:
        gone = Cell.objects.get(pk=cells[1]["id"])
        path = gone.crop.path
        cell_delete(cell=gone, user=user)
        assert not os.path.exists(path)


@pytest.mark.parametrize("body", ["null", "[1, 2]", '"box"', "{}"])
def test_a_cell_patch_whose_body_is_no_object_is_refused_with_a_message(api_as, analyzed_slide, body):
    client = api_as("hematologist", username="h6")
    cell = analyzed_slide.cells.first()
    r = client.patch(f"/api/cells/{cell.pk}/", body, content_type="application/json")
    assert r.status_code == 400 and r.json()["message"]
    assert Cell.objects.get(pk=cell.pk).box == cell.box and not CellEvent.objects.filter(cell=cell, actor__isnull=False)


@pytest.mark.parametrize("value", ["abc", "1.5", "-3", "99999999999999999999999"])
def test_slides_filtered_by_a_patient_id_that_is_none_is_refused_with_a_message(api_as, value):
    r = api_as("hematologist", username="h7").get(f"/api/slides/?patient={value}")
    assert r.status_code == 400 and "patient id" in r.json()["message"]


def test_a_patch_whose_class_is_refused_leaves_the_box_where_it_was(api_as, analyzed_slide):
    cell = analyzed_slide.cells.first()
    Cell.objects.filter(pk=cell.pk).update(probabilities={"lymphocyte": 0.7, "monocyte": 0.3})  # a model's classes
    before = cell.box
    moved = [before[0] + 2, before[1] + 2, before[2] - 2, before[3] - 2]
    r = api_as("annotator").patch(f"/api/cells/{cell.pk}/", {"box": moved, "reviewed_class": "dragon"}, format="json")
    assert r.status_code == 400 and "dragon" in r.json()["message"]
    cell.refresh_from_db()
    assert cell.box == before and cell.reviewed_class == ""
    assert not CellEvent.objects.filter(cell_ref=cell.pk, action=CellEvent.Action.MOVE).exists()


@pytest.mark.django_db(transaction=True)
def test_a_change_to_a_cell_while_its_slide_is_signed_off_waits_and_is_refused(analyzed_slide, make_user):
    """A sign-off holds the slide's row while it checks and signs; a reclassification that comes meanwhile
    waits, then finds the slide signed off: a 409, and the signed differential is what was reviewed."""
    from django.db import transaction

    from webapp.slides.services import slide_sign_off

    needs_row_locks()
    annotator, hematologist = make_user("annotator"), make_user("hematologist")
    cell = analyzed_slide.cells.first()
    outcome = {}
    with transaction.atomic():
        signed = slide_sign_off(slide=analyzed_slide, user=hematologist)  # holds the row until the commit
        thread = in_a_thread(lambda: cell_reclassify(cell=Cell.objects.get(pk=cell.pk), label="basophil",
                                                      user=annotator), outcome)
        thread.join(timeout=3)
        assert thread.is_alive(), f"the change did not wait for the sign-off: {outcome}"
    thread.join(timeout=30)
    assert signed.signed_off_at is not None
    assert "crash" not in outcome and "result" not in outcome, outcome
    assert outcome["error"].status_code == 409 and "signed off" in str(outcome["error"])
    assert Cell.objects.get(pk=cell.pk).reviewed_class == ""
    assert not CellEvent.objects.filter(cell_ref=cell.pk, action=CellEvent.Action.RECLASSIFY).exists()


@pytest.mark.django_db(transaction=True)
def test_two_changes_of_one_cell_at_once_follow_each_other_in_its_history(analyzed_slide, make_user):
    """Two reviewers reclassify the same cell at the same moment: the second waits for the first, and its
    history event starts from the first one's class, not from what both read before."""
    from django.db import transaction

    needs_row_locks()
    first, second = make_user("hematologist", username="first"), make_user("annotator", username="second")
    cell = analyzed_slide.cells.first()
    stale = Cell.objects.get(pk=cell.pk)  # what the second reviewer's request read
    outcome = {}
    with transaction.atomic():
        cell_reclassify(cell=Cell.objects.get(pk=cell.pk), label="lymphocyte", user=first)
        thread = in_a_thread(lambda: cell_reclassify(cell=stale, label="monocyte", user=second), outcome)
        thread.join(timeout=3)
        assert thread.is_alive(), f"the second change did not wait for the first: {outcome}"
    thread.join(timeout=30)
    assert set(outcome) == {"result"}, outcome
    events = list(CellEvent.objects.filter(cell_ref=cell.pk, action=CellEvent.Action.RECLASSIFY).order_by("pk"))
    assert [(e.before["reviewed_class"], e.after["reviewed_class"]) for e in events] == [
        (None, "lymphocyte"), ("lymphocyte", "monocyte")]
    assert Cell.objects.get(pk=cell.pk).reviewed_class == "monocyte"


@pytest.mark.django_db(transaction=True)
def test_an_analysis_asked_for_during_a_sign_off_waits_and_is_refused(analyzed_slide, make_user):
    """Analysing again replaces the model's cells: asked for while the slide is being signed off, it waits
    for the sign-off and is refused, and the signed report keeps its cells and status."""
    from django.db import transaction

    from webapp.slides.services import slide_sign_off

    needs_row_locks()
    hematologist = make_user("hematologist")
    stale = Slide.objects.get(pk=analyzed_slide.pk)  # what the second request read
    cells = sorted(analyzed_slide.cells.values_list("pk", flat=True))
    outcome = {}
    with transaction.atomic():
        slide_sign_off(slide=analyzed_slide, user=hematologist)
        thread = in_a_thread(lambda: slide_analyze_request(slide=stale, user=hematologist), outcome)
        thread.join(timeout=3)
        assert thread.is_alive(), f"the analysis was queued without waiting for the sign-off: {outcome}"
    thread.join(timeout=30)
    assert set(outcome) == {"error"} and outcome["error"].status_code == 409, outcome
    slide = Slide.objects.get(pk=analyzed_slide.pk)
    assert slide.status == Slide.Status.ANALYZED and slide.signed_off_at is not None
    assert sorted(slide.cells.values_list("pk", flat=True)) == cells


def test_an_analysis_job_left_for_a_slide_signed_off_since_changes_nothing(analyzed_slide, make_user):
    job = slide_analyze_request(slide=analyzed_slide, user=None)
    Slide.objects.filter(pk=analyzed_slide.pk).update(status=Slide.Status.ANALYZED, signed_off_at="2026-01-01T00:00Z")
    cells = sorted(analyzed_slide.cells.values_list("pk", flat=True))
    job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.SUCCEEDED
    slide = Slide.objects.get(pk=analyzed_slide.pk)
    assert slide.status == Slide.Status.ANALYZED and sorted(slide.cells.values_list("pk", flat=True)) == cells


@pytest.mark.django_db(transaction=True)
def test_a_cell_moved_while_the_analysis_stores_its_answers_is_kept(analyzed_slide, make_user):
    """The analysis replaces the model's cells nobody has edited. A person moving one of them at that moment
    used to lose the move: the analysis, not seeing the uncommitted change, deleted the cell just after."""
    from django.db import transaction

    from webapp.cells.services import cells_replace_from_model

    needs_row_locks()
    annotator = make_user("annotator")
    cell = analyzed_slide.cells.first()
    image = cell.image
    moved = [cell.box[0] + 1, cell.box[1] + 1, cell.box[2] - 1, cell.box[3] - 1]
    outcome = {}
    with transaction.atomic():
        cell_move(cell=Cell.objects.get(pk=cell.pk), box=moved, user=annotator, answer=False)
        thread = in_a_thread(lambda: cells_replace_from_model(image=image, results=[]), outcome)
        thread.join(timeout=3)
        assert thread.is_alive(), f"the analysis did not wait for the person's change: {outcome}"
    thread.join(timeout=30)
    assert set(outcome) == {"result"}, outcome
    assert Cell.objects.get(pk=cell.pk).box == moved


def test_analysing_again_leaves_no_file_of_the_cells_it_replaced(active_classifier, analyzed_slide,
                                                                  django_capture_on_commit_callbacks):
    from django.conf import settings

    def heatmaps():
        return sorted(p.name for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file() and "heatmap" in str(p))

    before = heatmaps()
    assert before and len(before) == analyzed_slide.cells.count()
    job = slide_analyze_request(slide=analyzed_slide, user=None)
    with django_capture_on_commit_callbacks(execute=True):
        assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    assert len(heatmaps()) == Cell.objects.filter(slide=analyzed_slide).count()  # none left of the replaced


def test_a_cell_deletion_that_fails_keeps_the_cells_files_and_one_that_commits_removes_them(
        active_classifier, analyzed_slide, make_user, django_capture_on_commit_callbacks):
    from django.db import transaction

    annotator = make_user("annotator")
    cell = Cell.objects.filter(slide=analyzed_slide).exclude(heatmap="").first()
    heatmap = cell.heatmap.path
    with pytest.raises(RuntimeError), transaction.atomic():
        cell_delete(cell=Cell.objects.get(pk=cell.pk), user=annotator)
        raise RuntimeError("the deletion's transaction fails after the row is deleted")
    assert Cell.objects.filter(pk=cell.pk).exists() and Path(heatmap).is_file()
    with django_capture_on_commit_callbacks(execute=True):
        cell_delete(cell=Cell.objects.get(pk=cell.pk), user=annotator)
    assert not Cell.objects.filter(pk=cell.pk).exists() and not Path(heatmap).exists()


def test_an_analysis_that_fails_to_store_its_cells_keeps_the_earlier_ones_and_leaves_no_file_of_its_own(
        active_classifier, analyzed_slide, monkeypatch):
    """Each cell's heatmap is written before its row: an analysis whose storing failed left the heatmaps of
    the cells it had made so far, with no row naming them."""
    from django.conf import settings

    from webapp.cells import services

    def files():
        return sorted(str(p) for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file() and "heatmap" in str(p))

    before, cells = files(), sorted(analyzed_slide.cells.values_list("pk", flat=True))
    assert before and len(before) == len(cells)

    def failing(**kwargs):
        raise RuntimeError("the new cell's history row cannot be written")

    monkeypatch.setattr(services, "_event", failing)
    job = slide_analyze_request(slide=analyzed_slide, user=None)
    assert job_execute(job_id=job.pk).status == Job.Status.FAILED
    assert sorted(analyzed_slide.cells.values_list("pk", flat=True)) == cells
    assert files() == before
