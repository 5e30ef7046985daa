"""Model versions: a default classifier on first start, one active version per kind, the worker uses it."""
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.helpers import in_a_thread, needs_row_locks
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
    assert [f.name for f in active.figures.all()] == ["confusion", "curves", "reliability", "robustness"]
    localizer = ModelVersion.objects.get(kind="localizer", status="active")
    assert localizer.architecture == "classical"
    from ml.localization.data import bccd_root

    if bccd_root().is_dir():  # scored on BCCD's annotated test fields, as a trained detector is on its own
        assert localizer.metrics["split"] == "bccd test (60 fields)" and localizer.metrics["mean_iou"] > 0.6
        assert [f.name for f in localizer.figures.all()] == ["pr_curve", "iou_hist"]
    else:
        assert localizer.metrics == {} and not localizer.figures.exists()
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


def test_register_model_adds_a_trained_classifier_run(db, classifier_run):
    from django.core.management.base import CommandError

    call_command("register_model", "classifier", str(classifier_run), "--activate")
    mv = ModelVersion.objects.get(kind="classifier")
    assert mv.status == "active" and mv.artifact.name.endswith(".pt")
    with pytest.raises(CommandError, match="already registered"):
        call_command("register_model", "classifier", str(classifier_run))


def test_a_version_lists_its_figures_and_serves_each_as_png(db, classifier_run, api_as, client):
    from webapp.registry.services import classifier_register_run

    mv = classifier_register_run(run=classifier_run, parameters={}, activate=False)
    reader = api_as("annotator", username="figures")
    listed = next(v for v in reader.get("/api/model-versions/?kind=classifier").json()["results"] if v["id"] == mv.pk)
    assert [f["name"] for f in listed["figures"]] == ["confusion", "curves", "reliability", "robustness"]
    assert listed["figures"][0]["title"] == "Confusion matrix, held-out cells"
    for figure in listed["figures"]:
        r = reader.get(figure["url"])
        assert r.status_code == 200 and r["Content-Type"] == "image/png"
        assert b"".join(r.streaming_content) == (classifier_run / f"{figure['name']}.png").read_bytes()
    missing = reader.get(f"/api/model-versions/{mv.pk}/figures/confusion_other_lab/")
    assert missing.status_code == 404 and missing.json()["message"]
    assert client.get(listed["figures"][0]["url"]).status_code in (401, 403)  # signed-out


@pytest.mark.django_db(transaction=True)
def test_scores_added_later_replace_a_figure_of_the_same_name_and_its_file(tmp_path, settings):
    from PIL import Image

    from webapp.registry.services import model_version_register, model_version_scores_add

    for name, colour in (("a/loss.png", "red"), ("b/loss.png", "blue")):
        (tmp_path / name).parent.mkdir()
        Image.new("RGB", (4, 4), colour).save(tmp_path / name)
    mv = model_version_register(kind="localizer", architecture="classical", version="c-1", metrics={"x": 1},
                                figures=[(tmp_path / "a/loss.png", "Loss")])
    first = mv.figures.get().image.path
    mv = model_version_scores_add(model_version=mv, metrics={"mean_iou": 0.8}, figures=[(tmp_path / "b/loss.png", "Loss")])
    assert mv.metrics == {"x": 1, "mean_iou": 0.8}
    figure = mv.figures.get()
    assert Image.open(figure.image.path).getpixel((0, 0)) == (0, 0, 255)
    assert not Path(first).exists()


def test_a_score_of_nothing_found_is_kept_as_none(db):
    """NaN and infinity (a precision with no box found) are no JSON: the version keeps them as None."""
    from webapp.registry.services import model_version_register, model_version_scores_add

    mv = model_version_register(kind="localizer", architecture="x", version="v-nan",
                                metrics={"ap50": float("nan"), "per": [1.0, float("inf")], "n": 3})
    mv.refresh_from_db()
    assert mv.metrics == {"ap50": None, "per": [1.0, None], "n": 3}
    assert model_version_scores_add(model_version=mv, metrics={"mean_iou": float("-inf")}).metrics["mean_iou"] is None


def test_a_registration_that_fails_leaves_no_file_behind(db, classifier_run, settings):
    from pathlib import Path

    from webapp.registry.services import model_version_register

    with pytest.raises(FileNotFoundError):
        model_version_register(kind="classifier", architecture="x", version="v-broken",
                               artifact_path=classifier_run / "best.pt",
                               figures=[(classifier_run / "confusion.png", "Confusion"),
                                        (classifier_run / "no-such-plot.png", "Missing")])
    assert not ModelVersion.objects.exists()
    assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


def test_register_model_refuses_what_it_cannot_read(db, tmp_path):
    from django.core.management.base import CommandError

    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(CommandError, match="is not a localizer this version can read"):
        call_command("register_model", "localizer", str(bogus))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("register_model", "classifier", str(tmp_path / "nothing"))
    assert not ModelVersion.objects.exists()


@pytest.fixture(scope="session")
def deep_localizer_run(tmp_path_factory):
    """A deep detector trained for a few seconds on generated fields (enough to be a valid run)."""
    from PIL import Image

    from ml.localization import train_default
    from ml.localization.formats import Annotation, write_voc
    from ml.localization.synthetic import synthetic_field

    root = tmp_path_factory.mktemp("voc")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    for i in range(10):
        img, boxes = synthetic_field(seed=i)
        Image.fromarray(img).save(root / "JPEGImages" / f"f{i}.png")
        write_voc(Annotation(f"f{i}.png", img.shape[1], img.shape[0], boxes), root / "Annotations" / f"f{i}.xml")
    return train_default(root, tmp_path_factory.mktemp("deep") / "run", epochs=1)


def test_a_deep_localizer_is_registered_with_the_scores_its_training_wrote(deep_localizer_run, tmp_path, db, capsys):
    """`ml.localization train` writes its validation scores beside the model (metrics.json); they are the version's."""
    import os
    import shutil

    run = tmp_path / "deep"
    shutil.copytree(deep_localizer_run, run)
    (run / "metrics.json").write_text(json.dumps({"mean_iou": 0.81, "ap50": 0.93, "split": "validation"}))
    call_command("register_model", "localizer", str(run))
    mv = ModelVersion.objects.get(kind="localizer")
    assert mv.metrics["mean_iou"] == 0.81 and mv.metrics["ap50"] == 0.93 and "train_seconds" in mv.metrics
    (run / "metrics.json").write_text("{cut short")
    later = (run / "model.pt").stat().st_mtime + 60
    os.utime(run / "model.pt", (later, later))  # another version of the run (a version is named by its time)
    call_command("register_model", "localizer", str(run))
    assert "cannot be read" in capsys.readouterr().err
    assert "mean_iou" not in ModelVersion.objects.filter(kind="localizer").exclude(pk=mv.pk).get().metrics


def test_a_registered_deep_localizer_is_used_by_the_analysis(deep_localizer_run, slide):
    call_command("register_model", "localizer", str(deep_localizer_run), "--activate")
    mv = ModelVersion.objects.get(kind="localizer", status="active")
    assert mv.artifact.name.endswith("model.pt") or mv.artifact.name.endswith(".pt")
    assert [(f.name, f.title) for f in mv.figures.all()] == [("loss", "Training loss")]
    job = job_execute(job_id=Job.objects.get(key=f"analyze:slide:{slide.pk}").pk)
    assert job.status == "succeeded", job.error
    assert all(c.localizer_version_id == mv.pk for c in slide.cells.all())


def test_a_slide_is_one_sample_when_its_class_frequencies_are_estimated(active_classifier, slide, settings):
    import numpy as np

    from ml.classification import load_classifier
    from webapp.slides.services import slide_analyze

    settings.LEUKOLAB_HEATMAPS = False
    settings.LEUKOLAB_CLASS_ADAPT = None
    slide_analyze(slide_id=slide.pk)
    before = list(slide.cells.order_by("x0", "y0").values_list("probabilities", flat=True))
    assert before
    settings.LEUKOLAB_CLASS_ADAPT = 0.5  # a prior worth half a cell: the slide's own frequencies decide
    slide_analyze(slide_id=slide.pk)
    after = list(slide.cells.order_by("x0", "y0").values("probabilities", "predicted_class", "confidence"))
    clf = load_classifier(active_classifier.artifact.path, prior=settings.LEUKOLAB_CLASS_PRIOR)
    p = np.array([[c[k] for k in clf.classes] for c in before])
    expected, _ = clf.adapt(p, 0.5)
    assert len(after) == len(before)
    for cell, e in zip(after, expected):
        assert np.allclose([cell["probabilities"][k] for k in clf.classes], e, atol=1e-4)
        assert cell["predicted_class"] == clf.classes[int(e.argmax())]
        assert cell["confidence"] == pytest.approx(float(e.max()), abs=1e-4)


def test_the_adaptation_setting_is_a_cell_count_or_off(monkeypatch):
    from webapp.config.env import env_cells

    monkeypatch.setenv("LEUKOLAB_CLASS_ADAPT", "150")
    assert env_cells("LEUKOLAB_CLASS_ADAPT", "off") == 150.0
    monkeypatch.setenv("LEUKOLAB_CLASS_ADAPT", "Off")
    assert env_cells("LEUKOLAB_CLASS_ADAPT", "100") is None
    monkeypatch.delenv("LEUKOLAB_CLASS_ADAPT")
    assert env_cells("LEUKOLAB_CLASS_ADAPT", "100") == 100.0
    for bad in ("-3", "many", "nan"):
        monkeypatch.setenv("LEUKOLAB_CLASS_ADAPT", bad)
        with pytest.raises(ValueError, match="LEUKOLAB_CLASS_ADAPT"):
            env_cells("LEUKOLAB_CLASS_ADAPT", "off")


def test_the_classifier_is_normalized_on_all_the_cells_of_a_slide(active_classifier, patient, settings):
    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile

    from ml.analyze import classifier_for_sample
    from ml.imageio import load_image
    from ml.localization.scale import rescale_for_microns_per_pixel
    from tests.helpers import smear_field
    from webapp.registry.runtime import active_classifier as runtime_classifier
    from webapp.registry.runtime import active_localizer
    from webapp.slides.services import slide_analyze, slide_upload

    files = [SimpleUploadedFile(*smear_field(i)[:2]) for i in (0, 1)]
    slide, _job = slide_upload(user=patient.created_by, patient=patient, files=files)
    settings.LEUKOLAB_HEATMAPS = False
    settings.LEUKOLAB_CLASS_NORM = None
    slide_analyze(slide_id=slide.pk)
    before = {c.pk: c.probabilities for c in slide.cells.all()}
    settings.LEUKOLAB_CLASS_NORM = 0.0  # the slide's own statistics alone
    slide_analyze(slide_id=slide.pk)
    cells = list(slide.cells.order_by("image_id", "y0", "x0"))
    assert len(cells) == len(before) >= 2 and {c.image_id for c in cells} == {im.pk for im in slide.images.all()}

    # the same answers, computed here: one classifier normalized on the cells of both images
    _, localizer = active_localizer()
    _, clf = runtime_classifier()
    rescale = rescale_for_microns_per_pixel(slide.microns_per_pixel)
    arrays, boxes = [], []
    for image in slide.images.order_by("pk"):
        with image.file.open("rb") as fh:
            arrays.append(load_image(fh))
        boxes.append(localizer.detect(arrays[-1], rescale=rescale))
    normalized = classifier_for_sample(clf, [clf.crops(a, b) for a, b in zip(arrays, boxes)], 0.0)
    expected = [p for a, b in zip(arrays, boxes) for p in normalized.classify(a, b)]
    assert len(expected) == len(cells)
    got = sorted(tuple(round(c.probabilities[k], 3) for k in clf.classes) for c in cells)
    want = sorted(tuple(round(e.probabilities[k], 3) for k in clf.classes) for e in expected)
    assert np.allclose(got, want, atol=2e-3)
    old = sorted(tuple(round(p[k], 3) for k in clf.classes) for p in before.values())
    assert not np.allclose(got, old, atol=2e-3)  # the normalization changed the answers


def test_an_ensemble_of_trained_classifiers_registers_and_analyzes_a_slide(db, classifier_run, slide, tmp_path,
                                                                          settings):
    from ml.classification.ensemble import build_ensemble

    settings.LEUKOLAB_HEATMAPS = True
    run = build_ensemble([classifier_run / "best.pt", classifier_run / "last.pt"], tmp_path / "ensemble")
    call_command("register_model", "classifier", str(run), "--activate")
    mv = ModelVersion.objects.get(kind="classifier", status="active")
    assert mv.architecture == "ensemble"
    job = job_execute(job_id=Job.objects.get(key=f"analyze:slide:{slide.pk}").pk)
    assert job.status == "succeeded", job.error
    cells = list(slide.cells.all())
    assert cells and all(c.model_version_id == mv.pk and c.heatmap for c in cells)


@pytest.mark.django_db(transaction=True)
def test_two_first_analyses_at_once_both_get_the_classical_localizer():
    """With no localizer active, the first analysis registers the classical one. A second that starts
    meanwhile finds no row to wait on, inserts the same version, and used to fail on the unique version
    (the slide's analysis failing with an IntegrityError); it now takes the row the first one made."""
    from django.db import transaction

    from webapp.registry.services import model_version_ensure_classical

    needs_row_locks()
    outcome = {}
    with transaction.atomic():
        first = model_version_ensure_classical()  # inserted, not yet committed
        thread = in_a_thread(model_version_ensure_classical, outcome)
        thread.join(timeout=3)  # its insert waits on the first one's uncommitted row
    thread.join(timeout=30)
    assert set(outcome) == {"result"}, outcome
    assert outcome["result"].pk == first.pk
    assert list(ModelVersion.objects.filter(kind=ModelVersion.Kind.LOCALIZER).values_list("version", "status")) == [
        ("classical-1", ModelVersion.Status.ACTIVE)]


@pytest.mark.django_db(transaction=True)
def test_two_promotions_at_once_leave_the_later_one_active():
    """Two admins promote two versions of a kind at the same moment: the second waits for the first and
    retires its choice, where it used to find nothing active to retire and fail on the one-active rule."""
    from django.db import transaction

    from webapp.registry.services import model_version_register

    needs_row_locks()
    kind = ModelVersion.Kind.LOCALIZER
    model_version_register(kind=kind, architecture="classical", version="v-old", activate=True)
    first = model_version_register(kind=kind, architecture="classical", version="v-first")
    second = model_version_register(kind=kind, architecture="classical", version="v-second")
    outcome = {}
    with transaction.atomic():
        model_version_promote(model_version=first)
        thread = in_a_thread(lambda: model_version_promote(model_version=ModelVersion.objects.get(pk=second.pk)), outcome)
        thread.join(timeout=3)
        assert thread.is_alive(), f"the second promotion did not wait for the first: {outcome}"
    thread.join(timeout=30)
    assert set(outcome) == {"result"}, outcome
    assert dict(ModelVersion.objects.filter(kind=kind).values_list("version", "status")) == {
        "v-old": ModelVersion.Status.RETIRED, "v-first": ModelVersion.Status.RETIRED,
        "v-second": ModelVersion.Status.ACTIVE}
