"""The model's answer and heatmap for a box drawn or moved by a person."""
from pathlib import Path

import pytest

from webapp.cells.models import Cell, CellEvent
from webapp.cells.services import cell_create, cell_move, cell_reclassify
from webapp.common.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.slides.services import slide_sign_off


def _answer_jobs(cell):
    jobs = Job.objects.filter(kind="cell_classify", params__slide_id=cell.slide_id).order_by("pk")
    return [job for job in jobs if cell.pk in {entry["id"] for entry in job.params["cells"]}]


def _run(job):
    job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


@pytest.fixture
def classified_slide(active_classifier, analyzed_slide):
    cells = list(analyzed_slide.cells.all())
    assert cells and all(c.predicted_class for c in cells), "the analysis classified its cells"
    return analyzed_slide


@pytest.fixture(params=["norm", "plain", "adapt"])
def preparation(request, settings):
    """How the classifier is prepared on a slide's cells: normalization statistics (the default), none,
    or class frequencies."""
    settings.LEUKOLAB_CLASS_NORM = 1000.0 if request.param == "norm" else None
    settings.LEUKOLAB_CLASS_ADAPT = 100.0 if request.param == "adapt" else None
    return request.param


def test_a_drawn_box_gets_the_models_answer_and_heatmap_and_keeps_the_persons_class(
        preparation, classified_slide, make_user, active_classifier):
    annotator = make_user("annotator", username="ann")
    image = classified_slide.images.first()
    model_cell = classified_slide.cells.first()
    cell = cell_create(image=image, box=model_cell.box, label="basophil", user=annotator)
    assert not cell.predicted_class and not cell.heatmap
    (job,) = _answer_jobs(cell)
    assert job.status == Job.Status.QUEUED and job.params["cells"] == [{"id": cell.pk, "box": cell.box}]
    _run(job)

    cell.refresh_from_db()
    model_cell.refresh_from_db()
    assert cell.reviewed_class == "basophil"  # the person's class stays
    assert cell.model_version == active_classifier and cell.heatmap
    assert set(cell.probabilities) == set(model_cell.probabilities)
    assert abs(sum(cell.probabilities.values()) - 1.0) < 1e-4
    assert cell.predicted_class == max(cell.probabilities, key=cell.probabilities.get)
    # the same box as the analysis's cell on the same slide: the same answer (with class frequencies
    # the drawn copy counts twice in the slide's estimate)
    assert cell.predicted_class == model_cell.predicted_class
    assert cell.confidence == pytest.approx(model_cell.confidence, abs=1e-4 if preparation != "adapt" else 0.05)
    answer = CellEvent.objects.filter(cell_ref=cell.pk, action="answer").get()
    assert answer.actor is None and answer.before["predicted_class"] is None
    assert answer.after["predicted_class"] == cell.predicted_class


def test_a_moved_box_is_answered_again_and_only_for_where_it_is_now(classified_slide, make_user,
                                                                    django_capture_on_commit_callbacks):
    annotator = make_user("annotator", username="ann")
    cell = classified_slide.cells.first()
    first_box = cell.box
    heatmap = cell.heatmap.read()
    x0, y0, x1, y1 = first_box
    cell_move(cell=cell, box=[x0 + 2, y0 + 2, x1 - 2, y1 - 2], user=annotator)
    (stale,) = _answer_jobs(cell)
    cell_move(cell=cell, box=[x0, y0, x1 - 1, y1 - 1], user=annotator)
    stale_job, current = _answer_jobs(cell)
    assert stale_job == stale and current.params["cells"][0]["box"] == [x0, y0, x1 - 1, y1 - 1]

    _run(stale)  # queued for a box the cell no longer has: writes nothing
    assert not CellEvent.objects.filter(cell_ref=cell.pk, action="answer").exists()
    with django_capture_on_commit_callbacks(execute=True):  # the old answer's files go once the new one is in
        _run(current)
    cell.refresh_from_db()
    assert cell.heatmap and cell.heatmap.read() != heatmap  # the crop of the box as it is now
    files = {p.name for p in Path(cell.heatmap.path).parent.iterdir()}
    kept = {Path(c.heatmap.name).name for c in Cell.objects.filter(slide=classified_slide) if c.heatmap}
    assert files == kept, "the old box's heatmap is removed"
    assert CellEvent.objects.filter(cell_ref=cell.pk, action="answer").count() == 1


def test_an_answer_that_fails_to_be_stored_keeps_the_old_answers_files_and_leaves_none_of_its_own(
        classified_slide, make_user, monkeypatch):
    """The answer's heatmap is written before its row: where storing the row failed, the new file was left
    behind, and the old answer's heatmap was already deleted (or overwritten by the new one under its name)
    while the row still named it."""
    from webapp.cells import services

    cell = classified_slide.cells.first()
    old_heatmap = Path(cell.heatmap.path)
    old_bytes = old_heatmap.read_bytes()
    before = sorted(p.name for p in old_heatmap.parent.iterdir())
    x0, y0, x1, y1 = cell.box
    cell_move(cell=cell, box=[x0 + 2, y0 + 2, x1 - 2, y1 - 2], user=make_user("annotator", username="ann"))
    (job,) = _answer_jobs(cell)

    def failing(**kwargs):
        raise RuntimeError("the answer's history row cannot be written")

    monkeypatch.setattr(services, "_event", failing)
    assert job_execute(job_id=job.pk).status == Job.Status.FAILED
    cell.refresh_from_db()
    assert Path(cell.heatmap.path) == old_heatmap and old_heatmap.read_bytes() == old_bytes
    assert sorted(p.name for p in old_heatmap.parent.iterdir()) == before


def test_no_answer_is_queued_without_an_active_classifier(analyzed_slide, make_user):
    cell = cell_create(image=analyzed_slide.images.first(), box=[10, 10, 60, 60], label="",
                       user=make_user("annotator", username="ann"))
    assert not _answer_jobs(cell)


def test_a_deleted_cells_answer_writes_nothing(classified_slide, make_user):
    from webapp.cells.services import cell_delete

    annotator = make_user("annotator", username="ann")
    cell = cell_create(image=classified_slide.images.first(), box=[10, 10, 60, 60], label="", user=annotator)
    (job,) = _answer_jobs(cell)
    cell_delete(cell=cell, user=annotator)
    _run(job)
    assert not CellEvent.objects.filter(cell_ref=cell.pk, action="answer").exists()


def test_the_api_says_while_an_answer_is_pending_and_sign_off_waits_for_it(api_as, classified_slide):
    client = api_as("admin", username="boss")
    image = classified_slide.images.first()
    r = client.post(f"/api/slides/{classified_slide.pk}/cells/", {"image": image.pk, "box": [5, 5, 70, 80]}, format="json")
    assert r.status_code == 201, r.content
    created = r.json()
    assert created["model_pending"] is True and created["predicted_class"] is None
    listed = {c["id"]: c for c in client.get(f"/api/slides/{classified_slide.pk}/cells/").json()}
    assert listed[created["id"]]["model_pending"] is True
    assert sum(c["model_pending"] for c in listed.values()) == 1

    r = client.post(f"/api/slides/{classified_slide.pk}/sign-off/")
    assert r.status_code == 409 and "still answering for 1 cell" in r.json()["message"]

    (job,) = _answer_jobs(Cell.objects.get(pk=created["id"]))
    _run(job)
    answered = client.get(f"/api/cells/{created['id']}/").json()
    assert answered["model_pending"] is False and answered["predicted_class"] in answered["probabilities"]
    assert client.get(answered["heatmap_url"]).status_code == 200
    assert client.post(f"/api/slides/{classified_slide.pk}/sign-off/").status_code == 200


def test_a_signed_off_slides_cells_can_no_longer_change(api_as, analyzed_slide, make_user):
    cell = analyzed_slide.cells.first()
    slide_sign_off(slide=analyzed_slide, user=make_user("hematologist", username="h1"))
    cell.refresh_from_db()
    annotator = make_user("annotator", username="ann")
    for change in (
        lambda: cell_move(cell=cell, box=[1, 1, 30, 30], user=annotator),
        lambda: cell_reclassify(cell=cell, label="monocyte", user=annotator),
        lambda: cell_create(image=analyzed_slide.images.first(), box=[1, 1, 30, 30], label="", user=annotator),
    ):
        with pytest.raises(ApplicationError, match="signed off") as err:
            change()
        assert err.value.status_code == 409
    client = api_as("admin", username="boss")
    r = client.delete(f"/api/cells/{cell.pk}/")
    assert r.status_code == 409 and "signed off" in r.json()["message"]
    assert Cell.objects.filter(pk=cell.pk, x0=cell.x0).exists()


def test_boxes_added_from_a_file_are_answered_by_one_job(api_as, classified_slide, make_user, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from ml.boxes import Box
    from ml.localization.formats import Annotation, write_coco

    image = classified_slide.images.get()
    boxes = [Box(4, 4, 70, 66), Box(300, 200, 380, 280), Box(500, 350, 600, 440)]
    write_coco([Annotation(image.filename, image.width, image.height, boxes)], tmp_path / "boxes.json", labels=["WBC"])
    client = api_as("annotator", username="ann")
    r = client.post(f"/api/slides/{classified_slide.pk}/boxes/",
                    {"files": [SimpleUploadedFile("boxes.json", (tmp_path / "boxes.json").read_bytes())]}, format="multipart")
    assert r.status_code == 200 and r.json()["added"] == 3
    (job,) = Job.objects.filter(kind="cell_classify")
    added = list(Cell.objects.filter(slide=classified_slide, source="person").order_by("pk"))
    assert [e["id"] for e in job.params["cells"]] == [c.pk for c in added]
    # one of them is moved before the job runs: the job answers for the other two, the move's job for it
    cell_move(cell=added[0], box=[4, 4, 72, 68], user=make_user("annotator", username="ann2"))
    _run(job)
    for cell in added:
        cell.refresh_from_db()
    assert not added[0].predicted_class
    assert all(c.predicted_class and c.heatmap and c.model_version for c in added[1:])
    (moved_job,) = _answer_jobs(added[0])[1:]
    _run(moved_job)
    added[0].refresh_from_db()
    assert added[0].predicted_class and added[0].heatmap


def test_an_answer_uses_the_statistics_the_analysis_kept_and_reads_one_image(active_classifier, patient, make_user,
                                                                            settings, monkeypatch):
    """A two-field slide: the box drawn over a cell of the analysis gets that cell's answer to the last
    digit, from its own image alone; without the kept statistics the job takes them again from every
    image and still answers."""
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile

    import webapp.slides.services as slide_services
    from tests.helpers import smear_field

    settings.LEUKOLAB_CLASS_NORM = 1000.0
    fields = [smear_field(0)[:2], smear_field(1)[:2]]
    slide, job = slide_services.slide_upload(user=patient.created_by, patient=patient,
                                             files=[SimpleUploadedFile(n, d) for n, d in fields])
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    kept = slide_services.slide_statistics_path(slide=slide, model_version=active_classifier)
    assert default_storage.exists(kept)
    reads = []
    real_read = slide_services.slide_image_read
    monkeypatch.setattr(slide_services, "slide_image_read", lambda *, image: reads.append(image.pk) or real_read(image=image))
    annotator = make_user("annotator", username="ann")
    model_cell = Cell.objects.filter(slide=slide).order_by("pk").last()
    drawn = cell_create(image=model_cell.image, box=model_cell.box, label="", user=annotator)
    (job,) = _answer_jobs(drawn)
    _run(job)
    drawn.refresh_from_db()
    assert reads == [model_cell.image_id]
    assert drawn.predicted_class == model_cell.predicted_class
    assert all(abs(drawn.probabilities[k] - v) < 1e-6 for k, v in model_cell.probabilities.items())

    default_storage.delete(kept)  # e.g. analysed before the statistics were kept
    reads.clear()
    cell_move(cell=drawn, box=[v + 1 for v in model_cell.box[:2]] + model_cell.box[2:], user=annotator)
    _run(_answer_jobs(drawn)[-1])
    drawn.refresh_from_db()
    assert sorted(set(reads)) == sorted(slide.images.values_list("pk", flat=True))
    assert drawn.predicted_class and drawn.heatmap


def test_a_deleted_box_comes_back_as_it_was_with_its_history(api_as, classified_slide, active_classifier):
    """Undo of a deletion: the same id, box, source, classes (and who gave one), mark and model answer;
    the crop and heatmap, deleted with it, are computed again; the history says who brought it back."""
    hematologist, annotator = api_as("hematologist", username="h-undo"), api_as("annotator", username="a-undo")
    slide = classified_slide
    cell = slide.cells.order_by("pk").first()
    assert hematologist.patch(f"/api/cells/{cell.pk}/", {"reviewed_class": "monocyte"}, format="json").status_code == 200
    assert annotator.patch(f"/api/cells/{cell.pk}/", {"difficult": True}, format="json").status_code == 200
    shown = annotator.get(f"/api/cells/{cell.pk}/").json()
    assert shown["heatmap_url"]
    assert annotator.delete(f"/api/cells/{cell.pk}/").status_code == 204
    assert not Cell.objects.filter(pk=cell.pk).exists()

    r = annotator.post(f"/api/slides/{slide.pk}/cells/restore/", {"cell": cell.pk}, format="json")
    assert r.status_code == 201, r.content
    back = r.json()
    for field in ("id", "image", "box", "source", "predicted_class", "probabilities", "confidence", "model_version",
                  "reviewed_class", "reviewed_by", "reviewed_at", "difficult"):
        assert back[field] == shown[field], field
    assert back["heatmap_url"] is None and back["model_pending"] is True
    restored = Cell.objects.get(pk=cell.pk)
    assert restored.created_at == cell.created_at and restored.localizer_version_id == cell.localizer_version_id
    (job,) = _answer_jobs(restored)
    _run(job)
    again = annotator.get(f"/api/cells/{cell.pk}/").json()
    assert again["heatmap_url"] and again["reviewed_class"] == "monocyte" and again["model_pending"] is False
    assert again["predicted_class"] == shown["predicted_class"]  # the same box, model and slide

    events = hematologist.get(f"/api/slides/{slide.pk}/history/?cell={cell.pk}").json()["results"]
    assert [e["action"] for e in events] == ["create", "reclassify", "mark", "delete", "restore", "answer"]
    assert events[4]["actor"] == "a-undo" and events[4]["after"]["reviewed_class"] == "monocyte"

    # once back, there is nothing to bring back; an unknown cell is a 404; a bad id a 400
    r = annotator.post(f"/api/slides/{slide.pk}/cells/restore/", {"cell": cell.pk}, format="json")
    assert r.status_code == 409 and "not deleted" in r.json()["message"]
    r = annotator.post(f"/api/slides/{slide.pk}/cells/restore/", {"cell": 10**9}, format="json")
    assert r.status_code == 404 and "has no cell" in r.json()["message"]
    assert annotator.post(f"/api/slides/{slide.pk}/cells/restore/", {"cell": "x"}, format="json").status_code == 400
    assert annotator.post(f"/api/slides/{slide.pk}/cells/restore/", {}, format="json").status_code == 400


def test_only_a_deleter_brings_a_box_back_and_not_once_the_slide_is_signed_off(api_as, classified_slide):
    annotator, viewer = api_as("annotator", username="a-undo2"), api_as("hematologist", username="h-undo2")
    slide = classified_slide
    cell = slide.cells.order_by("pk").first()
    assert annotator.delete(f"/api/cells/{cell.pk}/").status_code == 204
    url = f"/api/slides/{slide.pk}/cells/restore/"
    assert viewer.post(url, {"cell": cell.pk}, format="json").status_code == 403
    assert viewer.post(f"/api/slides/{slide.pk}/sign-off/").status_code == 200
    r = annotator.post(url, {"cell": cell.pk}, format="json")
    assert r.status_code == 409 and "signed off" in r.json()["message"]
    assert not Cell.objects.filter(pk=cell.pk).exists()


def test_a_box_deleted_before_its_image_was_kept_comes_back_on_a_one_image_slide(classified_slide, make_user):
    """Deletions recorded before the image was kept with them (``before`` without ``kept``)."""
    from webapp.cells.services import cell_delete, cell_restore

    annotator = make_user("annotator", username="ann")
    cell = classified_slide.cells.order_by("pk").first()
    ref, box = cell.pk, cell.box
    cell_delete(cell=cell, user=annotator)
    event = CellEvent.objects.get(cell_ref=ref, action="delete")
    event.before.pop("kept")
    event.save()
    back = cell_restore(slide=classified_slide, cell_id=ref, user=annotator)
    assert back.pk == ref and back.box == box and back.image_id == cell.image_id
    assert back.source == cell.source and back.predicted_class == cell.predicted_class
    # deleted again, its id then taken by another box (SQLite reuses the last id): refused, nothing lost
    cell_delete(cell=back, user=annotator)
    Cell.objects.create(pk=ref, slide=classified_slide, image=cell.image, x0=1, y0=1, x1=20, y1=20,
                        source=Cell.Source.PERSON)
    with pytest.raises(ApplicationError, match="has been given to a box drawn since"):
        cell_restore(slide=classified_slide, cell_id=ref, user=annotator)


def test_a_cell_replaced_by_analysing_again_is_not_brought_back(analyzed_slide, make_user):
    from webapp.cells.services import cell_restore
    from webapp.slides.services import slide_analyze_request

    ref = analyzed_slide.cells.order_by("pk").first().pk
    _run(slide_analyze_request(slide=analyzed_slide, user=None))
    assert not Cell.objects.filter(pk=ref).exists()  # the model's cells were replaced by the new analysis's
    with pytest.raises(ApplicationError, match="went when the slide was analysed again"):
        cell_restore(slide=analyzed_slide, cell_id=ref, user=make_user("annotator", username="ann"))
