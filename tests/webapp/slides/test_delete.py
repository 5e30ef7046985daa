"""Deleting a slide (and a patient without slides): who may, when, and that every kept file goes with it."""
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.helpers import in_a_thread, needs_row_locks, smear_field
from webapp.cells.models import Cell, CellEvent
from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.slides.models import Slide, SlideImage


def _media_files() -> set[Path]:
    root = Path(django_settings.MEDIA_ROOT)
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _analyzed_slide(patient, index: int) -> Slide:
    from webapp.slides.services import slide_upload

    name, data, _ = smear_field(index)
    slide, job = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(name, data)])
    job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error
    slide.refresh_from_db()
    return slide


@pytest.fixture
def admin(api_as):
    return api_as("admin", username="lab-admin")


def test_an_admin_deletes_a_slide_with_its_cells_history_and_every_file(
        admin, patient, active_classifier, make_user, settings, django_capture_on_commit_callbacks):
    """Two analyzed slides, one a scan large enough for a preview and zoom tiles, with crops, heatmaps and
    the classifier's statistics kept: deleting one leaves exactly the other's rows and files."""
    from webapp.cells.services import cell_reclassify

    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 300  # a 640x480 field is shown reduced, with tiles
    kept = _analyzed_slide(patient, 5)
    before = _media_files()
    slide = _analyzed_slide(patient, 0)
    cells = list(slide.cells.all())
    assert cells and any(c.heatmap for c in cells) and any(c.crop for c in cells)
    cell_reclassify(cell=cells[0], label="lymphocyte", user=make_user("annotator", username="a1"))
    theirs = _media_files() - before
    assert any(str(p).startswith("tiles/") for p in theirs) and any(str(p).startswith("previews/") for p in theirs)
    assert any(p.suffix == ".npz" for p in theirs), "the classifier's statistics for the slide are kept"

    with django_capture_on_commit_callbacks(execute=True) as removals:  # the files go once the rows have
        r = admin.delete(f"/api/slides/{slide.pk}/")
    assert r.status_code == 204, r.content
    assert len(removals) == 1
    assert not Slide.objects.filter(pk=slide.pk).exists()
    assert not SlideImage.objects.filter(slide_id=slide.pk).exists()
    assert not Cell.objects.filter(slide_id=slide.pk).exists() and not CellEvent.objects.filter(slide_id=slide.pk).exists()
    assert _media_files() == before, "the deleted slide's files are gone, the other slide's are all there"
    assert admin.get(f"/api/slides/{slide.pk}/").status_code == 404
    assert admin.get(f"/api/slides/{kept.pk}/").status_code == 200 and kept.cells.exists()


def test_a_signed_off_slide_is_kept(admin, analyzed_slide, make_user):
    from webapp.slides.services import slide_sign_off

    slide_sign_off(slide=analyzed_slide, user=make_user("hematologist", username="h1"))
    files = _media_files()
    r = admin.delete(f"/api/slides/{analyzed_slide.pk}/")
    assert r.status_code == 409 and "signed off" in r.json()["message"]
    assert Slide.objects.filter(pk=analyzed_slide.pk).exists() and _media_files() == files
    assert admin.get("/api/deletions/").json()["count"] == 0  # nothing deleted, nothing recorded


def test_a_slide_whose_analysis_is_queued_is_kept_until_it_ends(admin, slide):
    files = _media_files()
    r = admin.delete(f"/api/slides/{slide.pk}/")
    assert r.status_code == 409 and "analysis is queued or running" in r.json()["message"]
    assert Slide.objects.filter(pk=slide.pk).exists() and _media_files() == files
    job_execute(job_id=Job.objects.get(key=f"analyze:slide:{slide.pk}").pk)
    assert admin.delete(f"/api/slides/{slide.pk}/").status_code == 204


def test_a_slide_with_a_cell_answer_to_come_is_kept_until_it_is_given(admin, analyzed_slide, active_classifier, make_user):
    from webapp.cells.services import cell_create

    cell_create(image=analyzed_slide.images.first(), box=[10, 10, 90, 90], label="",
                user=make_user("annotator", username="a1"))
    r = admin.delete(f"/api/slides/{analyzed_slide.pk}/")
    assert r.status_code == 409 and "still answering for 1 cell" in r.json()["message"]
    for job in Job.objects.filter(kind="cell_classify", status=Job.Status.QUEUED):
        job_execute(job_id=job.pk)
    assert admin.delete(f"/api/slides/{analyzed_slide.pk}/").status_code == 204


@pytest.mark.parametrize("role", ["hematologist", "annotator"])
def test_only_an_admin_deletes(api_as, analyzed_slide, role):
    r = api_as(role, username=f"{role}-2").delete(f"/api/slides/{analyzed_slide.pk}/")
    assert r.status_code == 403
    assert Slide.objects.filter(pk=analyzed_slide.pk).exists()


def test_another_labs_slide_is_not_found(api_as, analyzed_slide, other_lab):
    r = api_as("admin", username="elsewhere", user_lab=other_lab).delete(f"/api/slides/{analyzed_slide.pk}/")
    assert r.status_code == 404 and Slide.objects.filter(pk=analyzed_slide.pk).exists()


def test_a_patient_is_deleted_once_they_have_no_slides(admin, api_as, patient, analyzed_slide, other_lab):
    r = admin.delete(f"/api/patients/{patient.pk}/")
    assert r.status_code == 409 and "has 1 slide" in r.json()["message"]
    assert api_as("hematologist", username="h2").delete(f"/api/patients/{patient.pk}/").status_code == 403
    image, cells = analyzed_slide.images.get(), analyzed_slide.cells.count()
    assert admin.delete(f"/api/slides/{analyzed_slide.pk}/").status_code == 204
    assert admin.delete(f"/api/patients/{patient.pk}/").status_code == 204
    assert admin.get(f"/api/patients/{patient.pk}/").status_code == 404

    # what went, by whom and when, is kept: for the lab's admins, not for other roles or labs
    records = admin.get("/api/deletions/").json()["results"]
    assert [(d["kind"], d["ref"], d["patient_identifier"], d["deleted_by"]) for d in records] == [
        ("patient", patient.pk, patient.identifier, "lab-admin"), ("slide", analyzed_slide.pk, patient.identifier, "lab-admin")]
    details = records[1]["details"]
    assert details["images"] == [image.filename] and details["cells"] == cells > 0 and details["status"] == "analyzed"
    assert api_as("hematologist", username="h3").get("/api/deletions/").status_code == 403
    assert api_as("admin", username="elsewhere", user_lab=other_lab).get("/api/deletions/").json()["count"] == 0


def test_the_admin_site_leaves_deleting_to_the_app(client, analyzed_slide, patient, django_user_model):
    """Django's admin would delete the rows and leave the files (and a signed-off slide would go too)."""
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-for-tests-123"))
    assert client.get(f"/admin/slides/slide/{analyzed_slide.pk}/change/").status_code == 200
    assert client.get(f"/admin/slides/slide/{analyzed_slide.pk}/delete/").status_code == 403
    assert client.get(f"/admin/patients/patient/{patient.pk}/delete/").status_code == 403
    assert client.get("/admin/patients/deletion/add/").status_code == 403  # the record of deletions is read only
    assert Slide.objects.filter(pk=analyzed_slide.pk).exists()


def test_a_file_that_cannot_be_deleted_is_logged_and_the_rest_go(admin, analyzed_slide, monkeypatch, caplog,
                                                                 django_capture_on_commit_callbacks):
    """The rows are gone once committed: a storage that fails on one file is logged, not a 500."""
    from django.core.files.storage import default_storage

    image = analyzed_slide.images.get()
    stuck = image.file.name
    delete = default_storage.delete

    def failing(name):
        if name == stuck:
            raise OSError("the bucket said no")
        return delete(name)

    monkeypatch.setattr(default_storage, "delete", failing)
    monkeypatch.setattr("webapp.slides.services._storage_tree_delete", lambda prefix: None)
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.delete(f"/api/slides/{analyzed_slide.pk}/")
    assert r.status_code == 204
    assert not Slide.objects.filter(pk=analyzed_slide.pk).exists()
    assert f"its file {stuck} could not be deleted" in caplog.text and "the bucket said no" in caplog.text
    assert Path(django_settings.MEDIA_ROOT, stuck).exists()


@pytest.mark.django_db(transaction=True)
def test_an_upload_while_its_patient_is_deleted_is_refused_and_leaves_nothing(make_user):
    """Deleting a patient holds the patient's row while it counts the slides; an upload that comes to keep
    its slide then waits, and finds the patient gone: a clear 404, no row and no file, where the slide
    would otherwise have been kept for a patient who is no more (or taken away with them)."""
    from django.db import transaction

    from webapp.patients.models import Patient
    from webapp.patients.services import patient_create
    from webapp.slides.services import slide_upload

    needs_row_locks()
    user = make_user("admin", username="lab-admin")
    patient = patient_create(user=user, identifier="P-RACE")
    name, data, _ = smear_field(0)
    outcome = {}
    with transaction.atomic():  # the deletion's first step: the patient's row held, no slide counted yet
        Patient.objects.select_for_update().get(pk=patient.pk)
        thread = in_a_thread(lambda: slide_upload(user=user, patient=patient, files=[SimpleUploadedFile(name, data)]),
                             outcome)
        thread.join(timeout=3)
        assert thread.is_alive(), f"the upload did not wait for the patient's row: {outcome}"
        assert Slide.objects.filter(patient_id=patient.pk).count() == 0
        Patient.objects.filter(pk=patient.pk).delete()
    thread.join(timeout=30)
    assert "crash" not in outcome and "result" not in outcome, outcome
    assert outcome["error"].status_code == 404 and "deleted" in str(outcome["error"])
    assert not Slide.objects.exists() and not SlideImage.objects.exists() and not _media_files()
