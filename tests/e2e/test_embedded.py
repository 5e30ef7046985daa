"""The embedded default that `make run` serves: SQLite, jobs in the web process, no services at all."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, iou, smear_field
from tests.live import ApiSession

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory):
    var = tmp_path_factory.mktemp("embedded-var")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "LEUKOLAB_TASKS", "MEDIA_ROOT", "SECRET_KEY"}}
    env.update(DJANGO_SETTINGS_MODULE="webapp.config.settings.local", LEUKOLAB_VAR_DIR=str(var), LEUKOLAB_BIND=f"127.0.0.1:{port}")
    manage = [sys.executable, "manage.py"]
    # the steps of `make run`, with a classifier trained on generated cells only when asked to
    for cmd in (["migrate", "--noinput"], ["ensure_models", "--skip-classifier"], ["seed_demo", "--slides", "2"]):
        done = subprocess.run(manage + cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    log = open(var / "server.log", "w+")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "-c", "deploy/gunicorn.conf.py", "webapp.config.wsgi"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (var / "server.log").read_text()[-3000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.3)
    yield base, var
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_embedded_default_uses_sqlite_and_keeps_its_secret_out_of_the_repo(embedded_server):
    _, var = embedded_server
    assert (var / "leukolab.sqlite3").is_file()
    secret = var / "secret_key"
    assert secret.is_file() and len(secret.read_text().strip()) >= 40
    assert oct(secret.stat().st_mode)[-3:] == "600"


def test_demo_slides_were_imported_and_analysed(embedded_server):
    base, _ = embedded_server
    api = ApiSession(base)
    api.login("annotator", "leukolab-annotator")
    patients = api.get("/api/patients/?search=DEMO").json()
    assert patients["count"] == 1 and patients["results"][0]["slide_count"] == 2
    slides = api.get(f"/api/slides/?patient={patients['results'][0]['id']}").json()["results"]
    assert {s["status"] for s in slides} == {"analyzed"} and all(s["cell_count"] >= 1 for s in slides)


def test_upload_is_analysed_in_process(embedded_server):
    base, var = embedded_server
    api = ApiSession(base)
    me = api.login("hematologist", "leukolab-hematologist")
    assert me["role"] == "hematologist"
    patient = api.post("/api/patients/", json={"identifier": "EMB-1"}).json()
    name, data, truth = smear_field(1)
    r = api.post("/api/slides/", data={"patient": patient["id"], "stain": "Wright"}, files=[("images", (name, data))])
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"
    slide = api.wait_for_slide(r.json()["id"], timeout=120)
    assert slide["status"] == "analyzed", slide["error"]
    cells = api.get(f"/api/slides/{slide['id']}/cells/").json()
    assert max(iou(c["box"], truth[0]) for c in cells) >= 0.5
    assert "in process" in (var / "server.log").read_text() or "this process" in (var / "server.log").read_text()


def test_pages_and_schema_are_served(embedded_server):
    base, _ = embedded_server
    api = ApiSession(base)
    assert api.get("/").status_code == 200 and "Leukolab" in api.get("/").text
    assert api.get("/api/schema/").status_code == 403  # the schema needs a login too
    api.login("admin", "leukolab-admin")
    schema = api.get("/api/schema/")
    assert schema.status_code == 200 and "/api/slides/" in schema.text
    assert api.get("/api/docs/").status_code == 200
