"""Training sets out of the app (boxes as VOC/COCO/YOLO, classified cells as crops) and boxes into it."""
import io
import os
import zipfile

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ml.boxes import Box
from ml.localization.formats import Annotation, load_dataset, write_coco, write_voc, write_yolo
from tests.helpers import BCCD, bccd_available, iou, smear_field
from webapp.cells.models import Cell
from webapp.cells.services import cell_reclassify


def _unzip(response, folder):
    assert response.status_code == 200, getattr(response, "content", b"")[:300]
    assert response["Content-Type"] == "application/zip"
    data = b"".join(response.streaming_content)
    if response.has_header("Content-Length"):  # told before the first byte: it must be the zip's
        assert int(response["Content-Length"]) == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None  # every file's CRC checks
        zf.extractall(folder)
    return folder


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_a_slides_boxes_go_out_as_a_dataset_the_localizer_trains_on(api_as, analyzed_slide, tmp_path, fmt):
    client = api_as("hematologist", username="h1")
    r = client.get(f"/api/exports/boxes/?format={fmt}&slide={analyzed_slide.pk}")
    # sent as it is made, its size told first (a browser shows the download's progress)
    assert r.streaming and int(r["Content-Length"]) > analyzed_slide.images.get().file.size
    assert r["Content-Disposition"] == f'attachment; filename="leukolab-boxes-{fmt}.zip"'
    samples = load_dataset(_unzip(r, tmp_path / fmt))  # what `python -m ml.localization train --data` reads
    image = analyzed_slide.images.get()
    (sample,) = samples
    assert sample.image_path.read_bytes() == image.file.open("rb").read()
    assert (sample.annotation.width, sample.annotation.height) == (image.width, image.height)
    cells = sorted(c.box for c in analyzed_slide.cells.all())
    got = sorted(b.as_list() for b in sample.annotation.boxes)
    assert len(got) == len(cells) and {b.label for b in sample.annotation.boxes} == {"WBC"}
    for a, b in zip(got, cells):
        assert np.allclose(a, b, atol=1.0)  # VOC keeps whole pixels


def test_boxes_with_their_classes_and_only_where_every_cell_has_one(api_as, active_classifier, analyzed_slide, make_user, tmp_path):
    client = api_as("annotator", username="a1")
    image = analyzed_slide.images.get()
    r = client.post(f"/api/slides/{analyzed_slide.pk}/cells/", {"image": image.pk, "box": [1, 1, 40, 40]}, format="json")
    assert r.status_code == 201
    drawn = Cell.objects.get(pk=r.json()["id"])
    r = client.get(f"/api/exports/boxes/?format=coco&classes=1&slide={analyzed_slide.pk}")
    assert r.status_code == 400 and "no class" in r.json()["message"]
    cell_reclassify(cell=drawn, label="monocyte", user=make_user("hematologist", username="h1"))
    r = client.get(f"/api/exports/boxes/?format=coco&classes=1&slide={analyzed_slide.pk}")
    (sample,) = load_dataset(_unzip(r, tmp_path / "coco"))
    labels = sorted(b.label for b in sample.annotation.boxes)
    expected = sorted(c.effective_class for c in analyzed_slide.cells.all())
    assert labels == expected and "monocyte" in labels


def test_exports_are_of_the_users_lab_and_explain_bad_requests(api_as, analyzed_slide, other_lab):
    own = api_as("hematologist", username="h1")
    stranger = api_as("hematologist", username="h2", user_lab=other_lab)
    r = stranger.get(f"/api/exports/boxes/?format=voc&slide={analyzed_slide.pk}")
    assert r.status_code == 404 and str(analyzed_slide.pk) in r.json()["message"]
    assert stranger.get("/api/exports/cells/?which=all").status_code == 400  # no slide of theirs has cells
    assert api_as(None).get("/api/exports/boxes/?format=voc").status_code in (401, 403)
    for query, words in [("format=pdf", "format must be"), ("format=voc&slide=x", "slide ids"),
                         ("format=voc&slide=99999999999999999999", "positive"),
                         ("format=voc&signed_off=1", "none of these is analyzed and signed off")]:
        r = own.get(f"/api/exports/boxes/?{query}")
        assert r.status_code == 400 and words in r.json()["message"], (query, r.content)
    r = own.get("/api/exports/cells/?which=some")
    assert r.status_code == 400 and "which must" in r.json()["message"]


def test_confirmed_cells_go_out_as_crops_the_classifier_trains_on(api_as, analyzed_slide, make_user, tmp_path):
    from ml.classification.data import load_folder, read_box_file

    client = api_as("hematologist", username="h1")
    r = client.get(f"/api/exports/cells/?slide={analyzed_slide.pk}")
    assert r.status_code == 400 and "which=all" in r.json()["message"]  # nothing reviewed yet
    cell = analyzed_slide.cells.first()
    cell_reclassify(cell=cell, label="eosinophil", user=make_user("hematologist", username="h2"))
    folder = _unzip(client.get(f"/api/exports/cells/?slide={analyzed_slide.pk}"), tmp_path / "cells")
    assert sorted(p.name for p in folder.iterdir()) == ["boxes.csv", "eosinophil"]
    (crop_path,) = (folder / "eosinophil").iterdir()
    boxes = read_box_file(folder)
    box = boxes[f"eosinophil/{crop_path.name}"]
    from PIL import Image

    crop = np.asarray(Image.open(crop_path))
    side = max(cell.x1 - cell.x0, cell.y1 - cell.y0) * 2  # the box and as much context again
    assert abs(crop.shape[0] - min(512, side)) <= 1 and crop.shape[0] == crop.shape[1]
    assert box.x0 > 0 and box.x1 < crop.shape[1] and abs((box.x0 + box.x1) / 2 - crop.shape[1] / 2) < 1
    # the class-per-folder reader takes the exported box, not the one the localizer would find
    cells = load_folder(folder, use_cache=False)
    assert cells.classes == ["eosinophil"] and len(cells) == 1
    scale = cells.images.shape[1] / crop.shape[0]
    assert np.allclose(cells.boxes[0], np.array(box.as_list()) * scale, atol=1.0)

    # with which=all, the model's answers too: every cell with a class
    folder = _unzip(client.get(f"/api/exports/cells/?slide={analyzed_slide.pk}&which=all"), tmp_path / "all")
    assert len(read_box_file(folder)) == sum(1 for c in analyzed_slide.cells.all() if c.effective_class)


def _voc_bytes(tmp_path, ann: Annotation) -> bytes:
    write_voc(ann, tmp_path / "x.xml")
    return (tmp_path / "x.xml").read_bytes()


@pytest.fixture
def fresh_slide(patient):
    """A slide of the same field, not analyzed (no cell)."""
    from webapp.slides.services import slide_upload

    name, data, _ = smear_field(0)
    slide, _ = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(name, data)])
    return slide


def test_a_smears_box_file_comes_in_as_cells_drawn_by_the_annotator(api_as, fresh_slide, tmp_path):
    name, _, truth = smear_field(0)
    image = fresh_slide.images.get()
    if bccd_available():  # the dataset's own file: WBC, RBC and platelet boxes
        xml = (BCCD / "Annotations" / (name.rsplit(".", 1)[0] + ".xml")).read_bytes()
    else:
        boxes = [Box(*b) for b in truth] + [Box(5, 5, 60, 60, label="RBC")]
        xml = _voc_bytes(tmp_path, Annotation(name, image.width, image.height, boxes))
    client = api_as("annotator", username="a1")
    r = client.post(f"/api/slides/{fresh_slide.pk}/boxes/", {"files": [SimpleUploadedFile(f"{name}.xml", xml)]},
                    format="multipart")
    assert r.status_code == 200, r.content
    assert r.json()["added"] == len(truth) and r.json()["skipped"].get("RBC", 0) >= 1
    cells = list(fresh_slide.cells.all())
    assert all(c.source == "person" and c.created_by.username == "a1" and not c.reviewed_class for c in cells)
    assert max(iou(c.box, truth[0]) for c in cells) > 0.95
    assert set(fresh_slide.cell_events.values_list("action", flat=True)) == {"create"}
    # the same file again adds nothing
    r = client.post(f"/api/slides/{fresh_slide.pk}/boxes/", {"files": [SimpleUploadedFile(f"{name}.xml", xml)]},
                    format="multipart")
    assert r.json()["added"] == 0 and r.json()["skipped"]["already there"] == len(truth)


def test_box_files_round_trip_through_every_format(api_as, analyzed_slide, fresh_slide, tmp_path):
    """Boxes exported from one slide come back, in each format, onto another slide of the same field."""
    client = api_as("annotator", username="a1")
    src = sorted(c.box for c in analyzed_slide.cells.all())
    image = fresh_slide.images.get()
    for fmt, upload in [("voc", "Annotations/{stem}.xml"), ("coco", "annotations.json"), ("yolo", "labels/{stem}.txt")]:
        Cell.objects.filter(slide=fresh_slide).delete()
        folder = _unzip(client.get(f"/api/exports/boxes/?format={fmt}&slide={analyzed_slide.pk}"), tmp_path / fmt)
        stem = next((folder / ("JPEGImages" if fmt == "voc" else "images")).iterdir()).stem
        path = folder / upload.format(stem=stem)
        r = client.post(f"/api/slides/{fresh_slide.pk}/boxes/",
                        {"files": [SimpleUploadedFile(path.name, path.read_bytes())], "labels": "WBC"}, format="multipart")
        assert r.status_code == 200 and r.json()["added"] == len(src), (fmt, r.content)
        got = sorted(c.box for c in fresh_slide.cells.filter(image=image))
        assert all(np.allclose(a, b, atol=1.0) for a, b in zip(got, src)), fmt


def test_a_bad_box_file_is_refused_by_name_and_adds_nothing(api_as, fresh_slide, tmp_path):
    client = api_as("annotator", username="a1")
    image = fresh_slide.images.get()
    good = _voc_bytes(tmp_path, Annotation(image.filename, image.width, image.height, [Box(10, 10, 80, 80)]))
    wrong_size = _voc_bytes(tmp_path, Annotation(image.filename, 100, 100, [Box(10, 10, 80, 80)]))
    outside = _voc_bytes(tmp_path, Annotation(image.filename, image.width, image.height, [Box(10, 10, image.width + 50, 80)]))
    odd_label = _voc_bytes(tmp_path, Annotation(image.filename, image.width, image.height, [Box(10, 10, 80, 80, label="Dog")]))
    write_coco([Annotation(image.filename, image.width, image.height, [Box(10, 10, 80, 80)])], tmp_path / "c.json")
    coco = (tmp_path / "c.json").read_bytes()
    write_yolo(Annotation(image.filename, image.width, image.height, [Box(10, 10, 80, 80)]), tmp_path / "y.txt", labels=["WBC"])
    yolo = (tmp_path / "y.txt").read_bytes()
    stem = image.filename.rsplit(".", 1)[0]
    cases = [
        ([("broken.xml", b"<annotation><size>")], "broken.xml: not valid XML"),
        ([("field.xml", wrong_size)], "field.xml: its boxes are for a 100x100 image"),
        ([("dog.xml", odd_label)], "dog.xml: unknown label 'Dog'"),
        ([("wide.xml", outside)], "wide.xml: box WBC"),
        ([("notes.pdf", b"%PDF")], "notes.pdf: not a box file"),
        ([("fine.xml", good), ("late.json", b"{}")], "late.json: not a COCO file"),
        ([(f"{stem}.txt", yolo)], f"{stem}.txt: a YOLO file needs the class names"),
        ([("c.json", coco.replace(b'"name": "WBC"', b'"name": "WBC"').replace(b'"category_id": 1', b'"category_id": 7'))],
         "c.json: annotation 1 has unknown category 7"),
        ([], "Attach at least one box file"),
    ]
    for files, message in cases:
        r = client.post(f"/api/slides/{fresh_slide.pk}/boxes/",
                        {"files": [SimpleUploadedFile(n, d) for n, d in files]}, format="multipart")
        assert r.status_code == 400 and message in r.json()["message"], (message, r.content)
        assert "/tmp" not in r.json()["message"]
        assert not fresh_slide.cells.exists()
    options = client.options(f"/api/slides/{fresh_slide.pk}/boxes/")  # found by generated requests: was a 500
    assert options.status_code == 200 and "files" in options.json()["actions"]["POST"]
    assert api_as("hematologist", username="h1").post(
        f"/api/slides/{fresh_slide.pk}/boxes/", {"files": [SimpleUploadedFile("fine.xml", good)]}, format="multipart"
    ).status_code == 403
    r = client.post(f"/api/slides/{fresh_slide.pk}/boxes/", {"files": [SimpleUploadedFile("boxes.txt", yolo)], "labels": "WBC"},
                    format="multipart")  # named for no image of the slide, even of a slide of one image
    assert r.status_code == 400 and "boxes.txt: its image 'boxes' is none of this slide's" in r.json()["message"]
    r = client.post(f"/api/slides/{fresh_slide.pk}/boxes/", {"files": [SimpleUploadedFile(f"{stem}.txt", yolo)], "labels": "WBC"},
                    format="multipart")
    assert r.status_code == 200 and r.json()["added"] == 1


def test_a_many_image_slides_box_files_find_their_images_by_name(api_as, patient, tmp_path):
    """Exported from one slide of two fields, imported into another slide of the same two: each file
    goes to its own image (the export keeps the uploaded name in its file names)."""
    from webapp.slides.services import slide_upload

    fields = [smear_field(0), smear_field(1)]
    if fields[0][0] == fields[1][0]:
        pytest.skip("needs two different fields")

    def upload():
        slide, _ = slide_upload(user=patient.created_by, patient=patient,
                                files=[SimpleUploadedFile(name, data) for name, data, _ in fields])
        return slide

    source, target = upload(), upload()
    client = api_as("annotator", username="a1")
    for image, (_, _, truth) in zip(source.images.order_by("position"), fields):
        for box in truth:
            client.post(f"/api/slides/{source.pk}/cells/", {"image": image.pk, "box": box}, format="json")
    for fmt in ("voc", "yolo"):
        Cell.objects.filter(slide=target).delete()
        folder = _unzip(client.get(f"/api/exports/boxes/?format={fmt}&slide={source.pk}"), tmp_path / fmt)
        files = sorted((folder / ("Annotations" if fmt == "voc" else "labels")).iterdir())
        assert len(files) == 2 and all(fields[k][0].rsplit(".", 1)[0] in files[k].name for k in range(2))
        r = client.post(f"/api/slides/{target.pk}/boxes/",
                        {"files": [SimpleUploadedFile(f.name, f.read_bytes()) for f in reversed(files)], "labels": "WBC"},
                        format="multipart")
        assert r.status_code == 200, r.content
        for image, (_, _, truth) in zip(target.images.order_by("position"), fields):
            got = [c.box for c in target.cells.filter(image=image)]
            assert len(got) == len(truth) and all(max(iou(g, t) for g in got) > 0.97 for t in truth), fmt


def test_a_lab_wide_box_export_leaves_out_slides_not_analyzed(api_as, analyzed_slide, fresh_slide, tmp_path):
    client = api_as("hematologist", username="h1")
    samples = load_dataset(_unzip(client.get("/api/exports/boxes/?format=coco"), tmp_path / "lab"))
    assert [s.image_path.name.split("_")[0] for s in samples] == [f"slide{analyzed_slide.pk}"]
    from webapp.slides.services import slide_sign_off
    from django.contrib.auth.models import User

    slide_sign_off(slide=analyzed_slide, user=User.objects.get(username="h1"))
    samples = load_dataset(_unzip(client.get("/api/exports/boxes/?format=voc&signed_off=1"), tmp_path / "signed"))
    assert len(samples) == 1 and len(samples[0].annotation.boxes) == analyzed_slide.cells.count()


@pytest.mark.slow
def test_a_classifier_trains_on_the_cells_a_lab_reviewed(api_as, patient, cell_folder, tmp_path):
    """The loop a lab runs: single-cell images uploaded, each cell boxed and classed by a person, the
    reviewed cells exported, and `python -m ml.classification train` run on the unzipped export."""
    import json
    import subprocess
    import sys

    from tests.helpers import DATASETS, REPO
    from webapp.slides.services import slide_upload

    pbc = DATASETS / "pbc"
    classes = ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    source = pbc if pbc.is_dir() else cell_folder  # real cells when the data is there, generated otherwise
    files = [(c, p) for c in classes
             for p in sorted(p for p in (source / c).iterdir() if p.suffix in (".jpg", ".png") and not p.name.startswith("."))[:6]]
    slide, _ = slide_upload(user=patient.created_by, patient=patient,
                            files=[SimpleUploadedFile(p.name, p.read_bytes()) for _, p in files])
    client = api_as("annotator", username="a1")
    for image, (cls, _) in zip(slide.images.order_by("position"), files):
        w, h = image.width, image.height  # the cell is centred: the person boxes its middle
        r = client.post(f"/api/slides/{slide.pk}/cells/",
                        {"image": image.pk, "box": [w * 0.25, h * 0.25, w * 0.75, h * 0.75], "label": cls}, format="json")
        assert r.status_code == 201, r.content
    folder = _unzip(client.get(f"/api/exports/cells/?slide={slide.pk}"), tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == classes
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "ml.classification", "train", "--data", str(folder), "--out", str(run),
         "--epochs", "2", "--batch", "8", "--img-size", "32", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "LEUKOLAB_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from ml.classification import load_classifier

    assert load_classifier(run).classes == classes
    assert len(json.loads((run / "log.json").read_text())) == 2  # one entry per epoch


def test_a_coco_file_of_many_images_gives_a_slide_the_boxes_of_its_own(api_as, analyzed_slide, patient, tmp_path):
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute
    from webapp.slides.services import slide_upload

    other_name, other_data, _ = smear_field(1)
    if other_name == smear_field(0)[0]:
        pytest.skip("needs two different fields")
    other, job = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(other_name, other_data)])
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    client = api_as("annotator", username="a1")
    folder = _unzip(client.get("/api/exports/boxes/?format=coco"), tmp_path / "lab")  # both slides, one file
    coco = (folder / "annotations.json").read_bytes()
    name, data, _ = smear_field(0)
    target, _ = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile(name, data)])
    r = client.post(f"/api/slides/{target.pk}/boxes/", {"files": [SimpleUploadedFile("lab.json", coco)]}, format="multipart")
    assert r.status_code == 200, r.content
    assert r.json()["added"] == analyzed_slide.cells.count()
    assert r.json()["skipped"]["of other images"] == other.cells.count()
    # a slide none of whose images the file holds is told so
    lone_name, lone_data, _ = smear_field(2)
    lone, _ = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile("elsewhere.jpg", lone_data)])
    r = client.post(f"/api/slides/{lone.pk}/boxes/", {"files": [SimpleUploadedFile("lab.json", coco)]}, format="multipart")
    assert r.status_code == 400 and "lab.json: none of its 2 images" in r.json()["message"]


def test_a_cameras_sideways_jpeg_keeps_its_cells_and_exports_as_shown(api_as, patient, tmp_path):
    """A JPEG stored sideways with an EXIF turn: the slide records the upright size the analysis and
    browsers see, its cells lie within it, and its box export reads back as a dataset."""
    from PIL import Image

    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute
    from webapp.slides.services import slide_upload

    name, data, truth = smear_field(0)
    upright = Image.open(io.BytesIO(data)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif)
    slide, _ = slide_upload(user=patient.created_by, patient=patient,
                            files=[SimpleUploadedFile("sideways.jpg", buf.getvalue())])
    image = slide.images.get()
    assert (image.width, image.height) == upright.size != upright.size[::-1]
    job = job_execute(job_id=Job.objects.get(key=f"analyze:slide:{slide.pk}").pk)
    assert job.status == Job.Status.SUCCEEDED, job.error
    cells = list(slide.cells.all())
    assert cells and all(c.x1 <= image.width and c.y1 <= image.height for c in cells)
    assert max(iou(c.box, truth[0]) for c in cells) >= 0.5  # the cell where it is on the upright field
    r = api_as("hematologist", username="h1").get(f"/api/exports/boxes/?format=voc&slide={slide.pk}")
    (sample,) = load_dataset(_unzip(r, tmp_path / "voc"))
    assert (sample.annotation.width, sample.annotation.height) == upright.size


def test_a_cell_marked_difficult_keeps_the_mark_through_voc_and_its_history(api_as, analyzed_slide, fresh_slide, tmp_path):
    """VOC's <difficult> comes in as the cell's mark, goes out again, and marking is an annotator's change
    kept in the history; a slide signed off keeps its marks as they are."""
    from ml.localization.formats import read_voc

    annotator = api_as("annotator", username="a1")
    cell = analyzed_slide.cells.first()
    r = annotator.patch(f"/api/cells/{cell.pk}/", {"difficult": True}, format="json")
    assert r.status_code == 200 and r.json()["difficult"] is True, r.content
    assert annotator.patch(f"/api/cells/{cell.pk}/", {"difficult": True}, format="json").json()["difficult"] is True
    events = annotator.get(f"/api/slides/{analyzed_slide.pk}/history/").json()["results"]
    marks = [e for e in events if e["action"] == "mark"]  # marking it again changed nothing
    assert len(marks) == 1 and marks[0]["actor"] == "a1"
    assert (marks[0]["before"]["difficult"], marks[0]["after"]["difficult"]) == (False, True)
    hematologist = api_as("hematologist", username="h1")  # may reclassify, not change boxes
    assert hematologist.patch(f"/api/cells/{cell.pk}/", {"difficult": False}, format="json").status_code == 403
    bad = annotator.patch(f"/api/cells/{cell.pk}/", {"difficult": "perhaps"}, format="json")
    assert bad.status_code == 400 and "difficult" in bad.json()["extra"]["fields"]

    # out as VOC with the flag, and in again onto a slide of the same field
    folder = _unzip(annotator.get(f"/api/exports/boxes/?format=voc&slide={analyzed_slide.pk}"), tmp_path / "voc")
    (xml,) = (folder / "Annotations").iterdir()
    flags = {tuple(round(v) for v in b.as_list()): b.difficult for b in read_voc(xml).boxes}
    assert sum(flags.values()) == 1 and flags[tuple(round(v) for v in cell.box)] is True
    r = annotator.post(f"/api/slides/{fresh_slide.pk}/boxes/", {"files": [SimpleUploadedFile(xml.name, xml.read_bytes())]},
                       format="multipart")
    assert r.status_code == 200 and r.json()["added"] == len(flags), r.content
    marked = [c for c in fresh_slide.cells.all() if c.difficult]
    assert len(marked) == 1 and np.allclose(marked[0].box, cell.box, atol=1.0)
    listed = annotator.get(f"/api/slides/{fresh_slide.pk}/cells/").json()
    assert [c["id"] for c in listed if c["difficult"]] == [marked[0].pk]

    # a box drawn as difficult; a signed-off slide's marks no longer change
    image = fresh_slide.images.get()
    r = annotator.post(f"/api/slides/{fresh_slide.pk}/cells/", {"image": image.pk, "box": [1, 1, 30, 30], "difficult": True},
                       format="json")
    assert r.status_code == 201 and r.json()["difficult"] is True
    assert hematologist.post(f"/api/slides/{analyzed_slide.pk}/sign-off/").status_code == 200
    r = annotator.patch(f"/api/cells/{cell.pk}/", {"difficult": False}, format="json")
    assert r.status_code == 409 and "signed off" in r.json()["message"]
    cell.refresh_from_db()
    assert cell.difficult


def test_an_uncompressed_tiff_goes_out_compressed_and_byte_for_byte(api_as, patient, tmp_path):
    """A TIFF field is deflated on the way (a JPEG or PNG goes in as it is), so that zip's size is not
    told before it is sent; what comes out unzipped is the stored file."""
    from PIL import Image

    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute
    from webapp.slides.services import slide_upload

    _, data, _ = smear_field(0)
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="TIFF")
    slide, _ = slide_upload(user=patient.created_by, patient=patient, files=[SimpleUploadedFile("field.tif", buf.getvalue())])
    assert job_execute(job_id=Job.objects.get(key=f"analyze:slide:{slide.pk}").pk).status == Job.Status.SUCCEEDED
    client = api_as("hematologist", username="h1")
    r = client.get(f"/api/exports/boxes/?format=voc&slide={slide.pk}")
    assert r.status_code == 200 and not r.has_header("Content-Length")
    data = b"".join(r.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (info,) = [i for i in zf.infolist() if i.filename.startswith("JPEGImages/")]
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < 0.8 * info.file_size
        assert zf.read(info) == slide.images.get().file.open("rb").read()
    (sample,) = load_dataset(_unzip(client.get(f"/api/exports/boxes/?format=voc&slide={slide.pk}"), tmp_path / "voc"))
    assert len(sample.annotation.boxes) == slide.cells.count()


def test_an_export_whose_image_file_is_gone_is_refused_before_its_first_byte(api_as, analyzed_slide):
    """A zip is sent as it is made: an image missing from storage is found first and named (409), not
    met halfway through a download that would look whole."""
    from django.core.files.storage import default_storage

    image = analyzed_slide.images.get()
    Cell.objects.filter(slide=analyzed_slide).update(reviewed_class="neutrophil")
    default_storage.delete(image.file.name)
    client = api_as("hematologist", username="h1")
    for url in (f"/api/exports/boxes/?format=voc&slide={analyzed_slide.pk}", f"/api/exports/cells/?slide={analyzed_slide.pk}"):
        r = client.get(url)
        assert r.status_code == 409 and not r.streaming, url
        assert f"{image.filename} (slide {analyzed_slide.pk})" in r.json()["message"] and "missing" in r.json()["message"]
