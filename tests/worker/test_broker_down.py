"""With the broker down, an upload still succeeds and its job waits, queued, to be handed over later."""
import json
import os
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = r"""
import json, time, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("seed_users", stdout=open("/dev/null", "w"))
from django.test import Client
from tests.helpers import smear_field
from webapp.jobs.models import Job
from webapp.jobs.services import jobs_redispatch
c = Client(HTTP_HOST="localhost")
c.login(username="hematologist", password="leukolab-hematologist")
patient = c.post("/api/patients/", {"identifier": "BROKER-DOWN"}, content_type="application/json").json()
name, data, _ = smear_field(0)
from django.core.files.uploadedfile import SimpleUploadedFile
t = time.monotonic()
r = c.post("/api/slides/", {"patient": patient["id"], "images": [SimpleUploadedFile(name, data)]})
elapsed = time.monotonic() - t
job = Job.objects.get()
print(json.dumps({"status": r.status_code, "elapsed": elapsed, "job": job.status, "celery_id": job.celery_id,
                  "message": job.message, "redispatched": jobs_redispatch(older_than_s=0),
                  "after": Job.objects.get().status}))
"""


def test_upload_with_the_broker_down_is_kept_and_its_job_waits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "MEDIA_ROOT", "SECRET_KEY"}}
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.config.settings.local",
        LEUKOLAB_VAR_DIR=str(tmp_path),
        REDIS_URL="redis://127.0.0.1:9/0",  # nothing listens on the discard port
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 201
    assert result["job"] == "queued" and result["celery_id"] == ""
    assert "waiting for the job queue" in result["message"]
    assert result["redispatched"] == 1 and result["after"] == "queued"
    assert result["elapsed"] < 30
