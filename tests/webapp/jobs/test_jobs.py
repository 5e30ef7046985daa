"""Jobs keep a readable status; failures are recorded, never lost."""
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
