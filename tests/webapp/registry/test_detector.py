"""The deep detector trained from the Models page: on annotated fields and the slides whose boxes people looked at."""
import pytest

from webapp.jobs.models import Job
from webapp.jobs.services import job_execute
from webapp.registry.models import ModelVersion


@pytest.fixture
def annotated_fields(tmp_path, settings):
    """Ten generated fields in a VOC folder (two of them the test part of its fixed split), and a short budget."""
    from PIL import Image

    from ml.localization.formats import Annotation, write_voc
    from ml.localization.synthetic import synthetic_field

    root = tmp_path / "fields"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(10):
        img, boxes = synthetic_field(seed=i)
        Image.fromarray(img).save(root / "JPEGImages" / f"f{i}.png")
        write_voc(Annotation(f"f{i}.png", img.shape[1], img.shape[0], boxes), root / "Annotations" / f"f{i}.xml")
    settings.LEUKOLAB_DETECTOR_DATA = str(root)
    settings.LEUKOLAB_DETECTOR_BUDGET_S = 3
    settings.LEUKOLAB_MODEL_DIR = tmp_path / "models"
    return root


def test_the_boxes_people_looked_at_are_written_as_fields_to_train_on(analyzed_slide, make_user, tmp_path, settings):
    from ml.localization.formats import load_dataset
    from webapp.cells.interchange import boxes_write
    from webapp.cells.services import cell_create
    from webapp.registry.services import detector_annotated_slides
    from webapp.slides.models import Slide

    assert not detector_annotated_slides().exists()  # the model's boxes alone teach nothing new
    image = analyzed_slide.images.get()
    cell_create(image=image, box=[5, 5, 60, 60], label="", user=make_user("annotator", username="anno"), answer=False)
    slides = detector_annotated_slides()
    assert list(slides) == [analyzed_slide]
    assert boxes_write(slides=slides, folder=tmp_path / "out") == 1
    (sample,) = load_dataset(tmp_path / "out")
    written = sorted([b.x0, b.y0, b.x1, b.y1] for b in sample.annotation.boxes)
    cells = sorted(c.box for c in analyzed_slide.cells.all())
    assert len(written) == len(cells) and all(abs(a - b) <= 1 for w, c in zip(written, cells) for a, b in zip(w, c))
    assert {b.label for b in sample.annotation.boxes} == {"WBC"}
    assert boxes_write(slides=slides, folder=tmp_path / "none", max_side=min(image.width, image.height) - 1) == 0  # a scan
    Slide.objects.filter(pk=analyzed_slide.pk).update(signed_off_at="2026-12-08T00:00:00Z")
    assert detector_annotated_slides().count() == 1


def test_an_admin_trains_the_detector_and_it_joins_the_localizers_as_a_scored_candidate(
        annotated_fields, analyzed_slide, make_user, api_as):
    from webapp.cells.services import cell_create

    cell_create(image=analyzed_slide.images.get(), box=[5, 5, 60, 60], label="", answer=False,
                user=make_user("annotator", username="anno"))
    admin = api_as("admin", username="boss")
    r = admin.post("/api/model-versions/detector/train/")
    assert r.status_code == 202 and r.json()["kind"] == "detector_train"
    assert admin.post("/api/model-versions/detector/train/").json()["id"] == r.json()["id"]  # one at a time
    job = job_execute(job_id=r.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error
    mv = ModelVersion.objects.get(kind="localizer", status="candidate")
    assert mv.parameters["annotated_fields"] == 1 and mv.artifact.name.endswith(".pt")
    assert mv.metrics["split"] == "fields test (2 fields)" and 0 <= mv.metrics["mean_iou"] <= 1
    assert mv.metrics["n_train"] + mv.metrics["n_val"] == 8 + 1  # the folder's training part and the slide's field
    assert [f.name for f in mv.figures.all()] == ["pr_curve", "iou_hist", "loss"]
    assert not ModelVersion.objects.filter(kind="localizer", status="active").exclude(architecture="classical").exists()


def test_without_annotated_fields_the_training_says_where_it_looked(settings, db, tmp_path):
    from webapp.registry.services import detector_train_request

    settings.LEUKOLAB_DETECTOR_DATA = str(tmp_path / "nowhere")
    job = job_execute(job_id=detector_train_request().pk)
    assert job.status == Job.Status.FAILED and "No annotated fields at" in job.error and "nowhere" in job.error


def test_only_an_admin_trains_the_detector(api_as):
    assert api_as("hematologist", username="h").post("/api/model-versions/detector/train/").status_code == 403
    assert api_as("annotator", username="a").post("/api/model-versions/detector/train/").status_code == 403
