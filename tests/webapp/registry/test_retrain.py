"""Retraining the classifier on the cells people reviewed: a candidate version, the active one untouched."""
import pytest

from webapp.cells.models import Cell
from webapp.cells.services import cell_reclassify
from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.registry.models import ModelVersion


@pytest.fixture
def retraining(settings, cell_folder, tmp_path):
    """Training data (the small generated folder) and a short budget, models kept in the test's folder."""
    settings.LEUKOLAB_TRAIN_DATA = str(cell_folder)
    settings.LEUKOLAB_RETRAIN_BUDGET_S = 12
    settings.LEUKOLAB_MODEL_DIR = tmp_path / "models"


def test_only_an_admin_asks_for_a_retraining_and_one_runs_at_a_time(api_as):
    for role in ("hematologist", "annotator"):
        assert api_as(role, username=f"no-{role}").post("/api/model-versions/retrain/").status_code == 403
    admin = api_as("admin", username="boss")
    first = admin.post("/api/model-versions/retrain/")
    assert first.status_code == 202 and first.json()["kind"] == "classifier_retrain"
    assert admin.post("/api/model-versions/retrain/").json()["id"] == first.json()["id"]  # still queued: the same job
    assert admin.get(f"/api/jobs/{first.json()['id']}/").status_code == 200


def test_a_retraining_learns_the_reviewed_cells_and_registers_a_candidate(retraining, active_classifier, analyzed_slide,
                                                                          make_user, api_as):
    reviewer = make_user("hematologist", username="rev")
    cells = list(Cell.objects.filter(slide=analyzed_slide))
    assert cells
    for cell in cells:
        cell_reclassify(cell=cell, label="neutrophil", user=reviewer)
    job = api_as("admin", username="boss").post("/api/model-versions/retrain/").json()
    done = job_execute(job_id=job["id"])
    assert done.status == Job.Status.SUCCEEDED, done.error
    candidate = ModelVersion.objects.get(kind="classifier", status="candidate")
    assert candidate.parameters["reviewed_cells"] == len(cells) and candidate.parameters["trained_by"] == "retraining"
    assert candidate.metrics["extra_data"] and "test" in candidate.metrics and candidate.artifact
    assert ModelVersion.objects.get(kind="classifier", status="active") == active_classifier  # an admin decides


def test_a_reviewed_class_the_training_data_lacks_fails_the_retraining_with_its_name(retraining, active_classifier,
                                                                                     analyzed_slide):
    from webapp.registry.services import classifier_retrain_request

    Cell.objects.filter(slide=analyzed_slide).update(reviewed_class="blast")
    job = job_execute(job_id=classifier_retrain_request().pk)
    assert job.status == Job.Status.FAILED
    assert "cannot use these cells" in job.error and "blast" in job.error
    assert not ModelVersion.objects.filter(kind="classifier", status="candidate").exists()


def test_without_training_data_a_retraining_says_where_it_looked(settings, db, tmp_path):
    from webapp.registry.services import classifier_retrain_request

    settings.LEUKOLAB_TRAIN_DATA = str(tmp_path / "nowhere")
    job = job_execute(job_id=classifier_retrain_request().pk)
    assert job.status == Job.Status.FAILED and "No training data at" in job.error and "nowhere" in job.error


def test_a_schedule_queues_a_retraining_as_the_button_does(db):
    """What an admin's periodic task (django-celery-beat) runs: the job the Models page's button queues."""
    from worker.tasks import classifier_retrain_scheduled

    job_id = classifier_retrain_scheduled.run()
    job = Job.objects.get(pk=job_id)
    assert job.kind == "classifier_retrain" and job.status == Job.Status.QUEUED and job.created_by is None
    assert classifier_retrain_scheduled.run() == job_id


def test_a_scheduled_retraining_is_followed_by_every_admin_and_by_no_one_else(db, api_as):
    """A schedule's retraining belongs to no lab; an admin's button then finds it (the same job), and follows it."""
    from worker.tasks import classifier_retrain_scheduled

    job_id = classifier_retrain_scheduled.run()
    admin = api_as("admin", username="boss")
    assert admin.post("/api/model-versions/retrain/").json()["id"] == job_id
    assert admin.get(f"/api/jobs/{job_id}/").status_code == 200
    assert job_id in [j["id"] for j in admin.get("/api/jobs/?status=queued").json()["results"]]
    assert api_as("hematologist", username="h").get(f"/api/jobs/{job_id}/").status_code == 404


def test_an_admin_schedules_the_retraining_changes_it_and_takes_it_away(db, api_as):
    """The Models page's schedule is a periodic task of django-celery-beat that runs the scheduled retraining."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    admin = api_as("admin", username="boss")
    assert admin.get("/api/model-versions/retrain/schedule/").json()["every"] == "never"
    weekly = admin.put("/api/model-versions/retrain/schedule/",
                       {"every": "week", "time": "02:30", "day_of_week": 0, "timezone": "Europe/Vienna"}, format="json")
    assert weekly.status_code == 200, weekly.json()
    assert {k: weekly.json()[k] for k in ("every", "time", "day_of_week", "timezone")} == {
        "every": "week", "time": "02:30", "day_of_week": 0, "timezone": "Europe/Vienna"}
    task = PeriodicTask.objects.get(task="classifier_retrain_scheduled")
    assert task.enabled and (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "2", "0")
    assert str(task.crontab.timezone) == "Europe/Vienna"
    daily = admin.put("/api/model-versions/retrain/schedule/", {"every": "day", "time": "23:05"}, format="json").json()
    assert (daily["every"], daily["time"], daily["day_of_week"], daily["timezone"]) == ("day", "23:05", None, "UTC")
    assert PeriodicTask.objects.filter(task="classifier_retrain_scheduled").count() == 1  # the one schedule, changed
    assert CrontabSchedule.objects.count() == 1  # the time it no longer uses is gone
    assert admin.put("/api/model-versions/retrain/schedule/", {"every": "never"}, format="json").json()["every"] == "never"
    assert not PeriodicTask.objects.filter(task="classifier_retrain_scheduled").exists() and not CrontabSchedule.objects.exists()


@pytest.mark.parametrize("body, message", [
    ({"every": "day"}, "time: A schedule needs the time of day"),
    ({"every": "week", "time": "02:00"}, "day_of_week: A weekly schedule needs its day"),
    ({"every": "week", "time": "02:00", "day_of_week": 7}, "day_of_week:"),
    ({"every": "day", "time": "25:00"}, "time:"),
    ({"every": "day", "time": "02:00", "timezone": "Mars/Olympus"}, "no time zone this server knows"),
    ({"every": "hourly"}, "every:"),
])
def test_a_schedule_that_cannot_be_kept_is_refused_with_its_reason(db, api_as, body, message):
    from django_celery_beat.models import PeriodicTask

    r = api_as("admin", username="boss").put("/api/model-versions/retrain/schedule/", body, format="json")
    assert r.status_code == 400 and message in r.json()["message"]
    assert not PeriodicTask.objects.filter(task="classifier_retrain_scheduled").exists()


def test_only_an_admin_sees_or_sets_the_schedule(db, api_as):
    hematologist = api_as("hematologist", username="h")
    assert hematologist.get("/api/model-versions/retrain/schedule/").status_code == 403
    assert hematologist.put("/api/model-versions/retrain/schedule/", {"every": "never"}, format="json").status_code == 403


def test_a_schedule_changed_on_the_admin_site_is_described_as_it_is(db, api_as):
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    from webapp.registry.services import RETRAIN_SCHEDULE

    crontab = CrontabSchedule.objects.create(minute="0", hour="*/6", day_of_week="*", day_of_month="*", month_of_year="*")
    PeriodicTask.objects.create(name=RETRAIN_SCHEDULE, task="classifier_retrain_scheduled", crontab=crontab)
    got = api_as("admin", username="boss").get("/api/model-versions/retrain/schedule/").json()
    assert got["every"] == "custom" and "*/6" in got["description"]
