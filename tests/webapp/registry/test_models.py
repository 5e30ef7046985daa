"""Model versions: a default classifier on first start, one active version per kind, the worker uses it."""
import json

import pytest
from django.core.management import call_command

from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.registry.models import ModelVersion
from webapp.registry.services import model_version_promote


def test_ensure_models_trains_and_registers_a_default_classifier_once(db, cell_folder, capsys):
    call_command("ensure_models", data=str(cell_folder), budget_s=20)
    active = ModelVersion.objects.get(kind="classifier", status="active")
    assert active.artifact and active.artifact.size > 10_000
    assert sorted(active.parameters["classes"]) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert "test" in active.metrics and 0.0 <= active.metrics["test"]["accuracy"] <= 1.0
    assert ModelVersion.objects.get(kind="localizer", status="active").architecture == "classical"
    call_command("ensure_models", data=str(cell_folder), budget_s=20)  # a later start reuses it
    assert ModelVersion.objects.filter(kind="classifier").count() == 1
    assert "registered and active" in capsys.readouterr().out


def test_promoting_retires_the_previous_version(active_classifier):
    newer = ModelVersion.objects.create(kind="classifier", architecture="x", version="v2")
    model_version_promote(model_version=newer)
    active_classifier.refresh_from_db()
    assert active_classifier.status == "retired"
    assert list(ModelVersion.objects.filter(kind="classifier", status="active")) == [newer]


def test_analysis_classifies_with_the_active_version_and_stores_heatmaps(active_classifier, slide, api_as):
    job = job_execute(job_id=Job.objects.get(key=f"analyze:slide:{slide.pk}").pk)
    assert job.status == "succeeded", job.error
    client = api_as("hematologist", username="reader")
    cells = client.get(f"/api/slides/{slide.pk}/cells/").json()
    classes = set(active_classifier.parameters.get("classes") or json.loads(json.dumps(active_classifier.metrics)).get("classes", []))
    assert cells
    for cell in cells:
        assert cell["predicted_class"] in cell["probabilities"]
        assert abs(sum(cell["probabilities"].values()) - 1.0) < 1e-3
        assert 0.0 < cell["confidence"] <= 1.0
        assert cell["model_version"] == active_classifier.version
        png = client.get(cell["heatmap_url"])
        assert png.status_code == 200 and png["Content-Type"] == "image/png"
        assert b"".join(png.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    if classes:
        assert {c["predicted_class"] for c in cells} <= classes
    diff = client.get(f"/api/slides/{slide.pk}/differential/").json()
    assert diff["total"] == len(cells) and "unclassified" not in {r["class"] for r in diff["rows"]}


def test_reclassifying_to_a_class_the_model_does_not_know_is_refused(active_classifier, analyzed_slide, api_as):
    client = api_as("hematologist", username="rev")
    cell = analyzed_slide.cells.first()
    r = client.patch(f"/api/cells/{cell.pk}/", {"reviewed_class": "dragon"}, format="json")
    assert r.status_code == 400 and "Unknown class" in r.json()["message"]
    ok = client.patch(f"/api/cells/{cell.pk}/", {"reviewed_class": "monocyte"}, format="json")
    assert ok.status_code == 200 and ok.json()["class"] == "monocyte"
