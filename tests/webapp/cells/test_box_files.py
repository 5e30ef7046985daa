"""Box files from other tools and from the app's own exports coming back: each lands on its own image
or is refused by name, without a 500 and without adding anything by mistake."""
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ml.boxes import Box
from ml.localization.formats import Annotation, write_voc
from tests.helpers import smear_field


def _voc(tmp_path, name, width, height, boxes) -> bytes:
    write_voc(Annotation(name, width, height, boxes), tmp_path / "x.xml")
    return (tmp_path / "x.xml").read_bytes()


def _upload(patient, files):
    from webapp.slides.services import slide_upload

    slide, _ = slide_upload(user=patient.created_by, patient=patient,
                            files=[SimpleUploadedFile(name, data) for name, data in files])
    return slide


def _post(client, slide, files, **extra):
    return client.post(f"/api/slides/{slide.pk}/boxes/", {"files": [SimpleUploadedFile(n, d) for n, d in files], **extra},
                       format="multipart")


def _draw(client, slide, image, box):
    r = client.post(f"/api/slides/{slide.pk}/cells/", {"image": image.pk, "box": box}, format="json")
    assert r.status_code == 201, r.content


def _two_fields():
    (n0, d0, _), (n1, d1, _) = smear_field(0), smear_field(1)
    if d0 == d1:
        pytest.skip("needs two different fields")
    return (n0, d0), (n1, d1)


def test_an_export_of_another_slide_with_the_same_image_name_stays_there(api_as, patient, tmp_path):
    """Two slides of different fields whose images have one name (a camera's IMG_0001.jpg): the
    lab's export, imported into one, gives it only its own boxes."""
    (_, d0), (_, d1) = _two_fields()
    a, b = _upload(patient, [("IMG_0001.jpg", d0)]), _upload(patient, [("IMG_0001.jpg", d1)])
    client = api_as("annotator", username="a1")
    _draw(client, a, a.images.get(), [260, 177, 391, 276])
    _draw(client, b, b.images.get(), [68, 315, 186, 420])
    r = client.get("/api/exports/boxes/?format=coco")
    coco = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content))).read("annotations.json")
    r = _post(client, a, [("annotations.json", coco)])
    assert r.status_code == 200, r.content
    assert r.json() == {"added": 0, "skipped": {"already there": 1, "of other images": 1}}
    assert [c.box for c in a.cells.all()] == [[260, 177, 391, 276]]
    # a VOC file of b's image, sent to a, is refused by name although a has one image of that size
    r = client.get(f"/api/exports/boxes/?format=voc&slide={b.pk}")
    zf = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content)))
    xml_name = next(n for n in zf.namelist() if n.endswith(".xml"))
    r = _post(client, a, [(xml_name.rsplit("/", 1)[-1], zf.read(xml_name))])
    assert r.status_code == 400 and "is none of this slide's (IMG_0001.jpg)" in r.json()["message"]
    assert a.cells.count() == 1


def test_a_file_naming_another_field_is_refused_even_on_a_slide_of_one_image(api_as, patient, tmp_path):
    (n0, d0), (n1, _) = _two_fields()
    slide = _upload(patient, [(n0, d0)])
    image = slide.images.get()
    r = _post(api_as("annotator", username="a1"), slide,
              [("other.xml", _voc(tmp_path, n1, image.width, image.height, [Box(10, 10, 80, 80)]))])
    assert r.status_code == 400 and f"other.xml: its image '{n1}' is none of this slide's ({n0})" in r.json()["message"]
    assert not slide.cells.exists()


def test_a_slides_own_voc_export_comes_back_without_doubling_its_cells(api_as, patient, tmp_path):
    """VOC writes whole pixels: a cell at fractional coordinates comes back within a pixel of itself."""
    (n0, d0), _ = _two_fields()
    slide = _upload(patient, [(n0, d0)])
    client = api_as("annotator", username="a1")
    _draw(client, slide, slide.images.get(), [260.4, 177.6, 391.3, 276.2])
    r = client.get(f"/api/exports/boxes/?format=voc&slide={slide.pk}")
    zf = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content)))
    xml_name = next(n for n in zf.namelist() if n.endswith(".xml"))
    r = _post(client, slide, [(xml_name.rsplit("/", 1)[-1], zf.read(xml_name))])
    assert r.status_code == 200 and r.json() == {"added": 0, "skipped": {"already there": 1}}
    assert slide.cells.count() == 1


def test_names_as_other_tools_write_them(api_as, patient, tmp_path):
    """An upload's name with a space is stored cleaned; a VOC file without <filename> is named like
    its image; two images of one name make a file for that name ambiguous."""
    (_, d0), (_, d1) = _two_fields()
    slide = _upload(patient, [("Field 1.jpg", d0), ("Field 2.jpg", d1)])
    first, second = slide.images.order_by("position")
    assert second.filename == "Field_2.jpg"
    client = api_as("annotator", username="a1")
    xml = _voc(tmp_path, "Field 2.jpg", second.width, second.height, [Box(10, 10, 80, 80)])
    r = _post(client, slide, [("Field 2.xml", xml)])
    assert r.status_code == 200 and r.json()["added"] == 1 and second.cells.count() == 1
    bare = _voc(tmp_path, "", first.width, first.height, [Box(20, 20, 90, 90)]).replace(b"<filename />", b"")
    assert b"<filename" not in bare
    r = _post(client, slide, [("Field_1.xml", bare)])
    assert r.status_code == 200 and r.json()["added"] == 1 and first.cells.count() == 1
    twice = _upload(patient, [("field.jpg", d0), ("field.jpg", d1)])
    r = _post(client, twice, [("field.xml", _voc(tmp_path, "field.jpg", first.width, first.height, [Box(10, 10, 80, 80)]))])
    assert r.status_code == 400 and "field.xml: its image 'field.jpg' could be any of 2 images" in r.json()["message"]
    assert not twice.cells.exists()


def test_files_that_were_500s_are_refused_by_name(api_as, patient, tmp_path):
    (n0, d0), _ = _two_fields()
    slide = _upload(patient, [(n0, d0)])
    image = slide.images.get()
    stem = n0.rsplit(".", 1)[0]
    client = api_as("annotator", username="a1")
    coco = {"images": [{"id": 1, "file_name": n0, "width": image.width, "height": image.height}],
            "categories": [{"id": 1, "name": "WBC"}], "annotations": []}
    cases = [
        ([(f"{stem}.txt", "0 0.5 0.5 0.1 0.1\n".encode("utf-16"))], f"{stem}.txt: not UTF-8 text"),
        ([("latin.json", json.dumps(coco, ensure_ascii=False).replace(n0, "Bild_\u00e4.jpg").encode("latin-1"))],
         "latin.json: not UTF-8 text"),
        ([("huge.json", json.dumps(coco).replace(f'"width": {image.width}', '"width": 1e999').encode())],
         "huge.json: malformed COCO entry"),
        ([("long.json", json.dumps(coco).replace('"id": 1,', '"id": ' + "1" * 5000 + ",", 1).encode())],
         "long.json: not valid JSON"),
        ([("twice.json", json.dumps({**coco, "images": coco["images"] + [
            {"id": 1, "file_name": "other.jpg", "width": 100, "height": 100}]}).encode())],
         "twice.json: image id 1 is given twice"),
    ]
    for files, message in cases:
        r = _post(client, slide, files, labels="WBC")
        assert r.status_code == 400 and message in r.json()["message"], (message, r.content)
    # a name too long for a file system is only a name
    long_name = "\u00e4" * 200 + ".xml"
    r = _post(client, slide, [(long_name, _voc(tmp_path, n0, image.width, image.height, [Box(10, 10, 80, 80)]))])
    assert r.status_code == 200 and r.json()["added"] == 1
    # a byte-order mark (a spreadsheet's or Notepad's UTF-8) is read
    r = _post(client, slide, [(f"{stem}.txt", b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\n")], labels="WBC")
    assert r.status_code == 200 and r.json()["added"] == 1
    # boxes of no area, or thinner than the app keeps, are counted, not dropped without a word
    flat = _voc(tmp_path, n0, image.width, image.height, [Box(10, 10, 10, 50), Box(10, 10, 10.004, 50)])
    r = _post(client, slide, [(f"{stem}.xml", flat)])
    assert r.status_code == 200 and r.json() == {"added": 0, "skipped": {"empty": 2}}
    assert slide.cells.count() == 2


def test_too_many_files_in_one_request_is_explained(api_as, patient, settings):
    (n0, d0), _ = _two_fields()
    slide = _upload(patient, [(n0, d0)])
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    r = _post(api_as("annotator", username="a1"), slide, [(f"f{i}.txt", b"0 0.5 0.5 0.1 0.1\n") for i in range(4)],
              labels="WBC")
    assert r.status_code == 400 and r.json()["message"].startswith("Too many files in one request (at most 3)")
    assert not slide.cells.exists()
