"""Jobs keep a readable status; failures are recorded, never lost."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.helpers import smear_field
from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.slides.models import Slide


def test_missing_file_fails_the_job_and_the_slide_with_a_message(slide):
    job = Job.objects.get(key=f"analyze:slide:{slide.pk}")
    image = slide.images.get()
    image.file.delete(save=False)
    job = job_execute(job_id=job.pk)
    slide.refresh_from_db()
    assert job.status == Job.Status.FAILED and "stored file is missing" in job.error
    assert slide.status == Slide.Status.FAILED and "missing" in slide.error
    assert job.finished_at is not None and job.attempts == 1


def test_job_progress_is_visible_through_the_api(api_as, analyzed_slide):
    client = api_as("annotator", username="viewer")
    body = client.get(f"/api/slides/{analyzed_slide.pk}/").json()
    job = client.get(f"/api/jobs/{body['job']['id']}/").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["started_at"] and job["finished_at"]
    assert client.get("/api/jobs/?status=succeeded").json()["count"] == 1


def test_redelivered_finished_job_is_not_run_twice(analyzed_slide):
    job = Job.objects.get(key=f"analyze:slide:{analyzed_slide.pk}")
    before = analyzed_slide.cells.count()
    again = job_execute(job_id=job.pk)
    assert again.attempts == 1 and analyzed_slide.cells.count() == before


@pytest.mark.django_db(transaction=True)
def test_the_embedded_runner_analyses_a_slide_while_a_training_runs(settings, monkeypatch, patient):
    """Jobs of the web process: a training runs in a pool of its own (as Celery routes it to the training
    queue), so an analysis queued after it does not wait for it."""
    import threading
    import time

    from webapp.jobs import inline
    from webapp.jobs.models import Job
    from webapp.registry.services import detector_train_request
    from webapp.slides.services import slide_upload

    settings.LEUKOLAB_TASKS = "inline"
    started, release = threading.Event(), threading.Event()

    def training(*, job_id=None, progress=None):  # holds its pool until the analysis is done
        started.set()
        assert release.wait(120)

    monkeypatch.setattr("webapp.registry.services.detector_train", training)
    trained = detector_train_request()
    assert started.wait(30), "the training never started"
    name, data, _ = smear_field(0)
    _slide, analysis = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(name, data)])
    deadline = time.monotonic() + 120
    while Job.objects.get(pk=analysis.pk).status not in (Job.Status.SUCCEEDED, Job.Status.FAILED) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Job.objects.get(pk=analysis.pk).status == Job.Status.SUCCEEDED
    assert Job.objects.get(pk=trained.pk).status == Job.Status.RUNNING  # still held
    release.set()
    assert inline.wait_idle(timeout=60)
    assert Job.objects.get(pk=trained.pk).status == Job.Status.SUCCEEDED
