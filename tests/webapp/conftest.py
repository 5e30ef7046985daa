import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.helpers import smear_field


@pytest.fixture
def patient(make_user):
    from webapp.patients.services import patient_create

    return patient_create(user=make_user("hematologist", username="owner"), identifier="P-001")


@pytest.fixture
def slide(patient):
    """An uploaded slide (its analysis job queued, not run)."""
    from webapp.slides.services import slide_upload

    name, data, _ = smear_field(0)
    slide, _job = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(name, data)])
    return slide


@pytest.fixture
def analyzed_slide(slide):
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute

    job = Job.objects.get(key=f"analyze:slide:{slide.pk}")
    job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error
    slide.refresh_from_db()
    return slide


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Every test stores its files in a folder of its own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT
