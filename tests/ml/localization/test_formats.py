import json

import pytest

from ml.boxes import Box
from ml.localization import formats
from ml.localization.__main__ import main
from ml.localization.formats import Annotation, AnnotationError


@pytest.fixture
def ann():
    return Annotation("field.jpg", 640, 480, [
        Box(10, 20, 110, 130, "WBC"), Box(300, 200, 380, 290, "RBC"), Box(600, 440, 640, 480, "Platelets")])


def _same(a: Annotation, b: Annotation, tol: float = 1e-3):
    assert (a.width, a.height) == (b.width, b.height)
    assert [x.label for x in a.boxes] == [x.label for x in b.boxes]
    for x, y in zip(a.boxes, b.boxes):
        assert x.as_list() == pytest.approx(y.as_list(), abs=tol)


def test_voc_round_trip(tmp_path, ann):
    formats.write_voc(ann, tmp_path / "a.xml")
    back = formats.read_voc(tmp_path / "a.xml", labels=formats.DEFAULT_LABELS)
    assert back.image == "field.jpg"
    _same(ann, back)


def test_voc_keeps_the_difficult_flag_and_refuses_a_bad_one(tmp_path):
    ann = Annotation("x.jpg", 100, 100, [Box(5, 5, 20, 20), Box(40, 40, 60, 60, difficult=True)])
    formats.write_voc(ann, tmp_path / "d.xml")
    assert [b.difficult for b in formats.read_voc(tmp_path / "d.xml").boxes] == [False, True]
    text = (tmp_path / "d.xml").read_text()
    (tmp_path / "t.xml").write_text(text.replace("<difficult>1</difficult>", "<difficult>True</difficult>"))
    assert [b.difficult for b in formats.read_voc(tmp_path / "t.xml").boxes] == [False, True]
    (tmp_path / "bad.xml").write_text(text.replace("<difficult>1</difficult>", "<difficult>maybe</difficult>"))
    with pytest.raises(AnnotationError, match="bad.xml.*<difficult> is 'maybe'"):
        formats.read_voc(tmp_path / "bad.xml")


def test_coco_round_trip(tmp_path, ann):
    other = Annotation("b.jpg", 100, 50, [Box(1, 2, 30, 40, "WBC", score=0.75)])
    formats.write_coco([ann, other], tmp_path / "c.json", with_scores=True)
    back = formats.read_coco(tmp_path / "c.json")
    assert [a.image for a in back] == ["field.jpg", "b.jpg"]
    _same(ann, back[0])
    _same(other, back[1])
    assert back[1].boxes[0].score == pytest.approx(0.75)
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["annotations"][0]["bbox"] == [10, 20, 100, 110]  # x, y, width, height


def test_yolo_round_trip(tmp_path, ann):
    labels = list(formats.DEFAULT_LABELS)
    formats.write_yolo(ann, tmp_path / "a.txt", labels=labels)
    back = formats.read_yolo(tmp_path / "a.txt", width=640, height=480, labels=labels)
    _same(ann, back, tol=0.01)


def test_folder_conversion_round_trip_through_the_command_line(tmp_path, ann):
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    from PIL import Image

    Image.new("RGB", (640, 480), "white").save(voc / "JPEGImages" / "field.jpg")
    formats.write_voc(ann, voc / "Annotations" / "field.xml")
    for fmt in ("coco", "yolo", "voc"):
        dst = tmp_path / fmt
        assert main(["convert", str(voc), str(dst), "--to", fmt]) == 0
        if fmt != "coco":
            (dst / "images").mkdir(exist_ok=True)
            (dst / "images" / "field.jpg").write_bytes((voc / "JPEGImages" / "field.jpg").read_bytes())
        else:
            (dst / "field.jpg").write_bytes((voc / "JPEGImages" / "field.jpg").read_bytes())
        samples = formats.load_dataset(dst)
        assert len(samples) == 1
        _same(ann, samples[0].annotation, tol=0.01)


def test_broken_xml_names_the_file(tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text("<annotation><filename>x.jpg</filename><size>")
    with pytest.raises(AnnotationError, match="broken.xml.*not valid XML"):
        formats.read_voc(bad)


def test_box_outside_the_image_names_the_file(tmp_path):
    formats.write_voc(Annotation("x.jpg", 100, 100, [Box(50, 50, 180, 90)]), tmp_path / "out.xml")
    with pytest.raises(AnnotationError, match="out.xml.*outside the 100x100 image"):
        formats.read_voc(tmp_path / "out.xml")


def test_unknown_label_names_the_file(tmp_path):
    formats.write_voc(Annotation("x.jpg", 100, 100, [Box(5, 5, 20, 20, "Neutrophil?")]), tmp_path / "lab.xml")
    with pytest.raises(AnnotationError, match="lab.xml.*unknown label 'Neutrophil\\?'"):
        formats.read_voc(tmp_path / "lab.xml", labels=formats.DEFAULT_LABELS)
    (tmp_path / "lab.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match="lab.txt:1.*unknown class index 7"):
        formats.read_yolo(tmp_path / "lab.txt", width=100, height=100, labels=["WBC"])


def test_bad_coco_names_the_file(tmp_path):
    (tmp_path / "c.json").write_text('{"images": [], "annotations": [')
    with pytest.raises(AnnotationError, match="c.json.*not valid JSON"):
        formats.read_coco(tmp_path / "c.json")


def test_command_line_reports_a_bad_file_without_traceback(tmp_path, capsys):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations" / "bad_one.xml").write_text("not xml at all")
    assert main(["evaluate", "--method", "classical", "--data", str(tmp_path), "--json"]) == 2
    err = capsys.readouterr().err
    assert "bad_one.xml" in err and "Traceback" not in err
