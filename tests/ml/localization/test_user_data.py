"""A user's own annotated folders: what other tools write is read right, and what cannot be used is
refused with a message naming the file, never a traceback or a silently wrong number."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ml.boxes import Box
from ml.jsonio import dumps
from ml.localization import formats
from ml.localization.__main__ import main
from ml.localization.formats import Annotation, AnnotationError


def _voc(root, anns, *, image_size=None, suffix=".jpg"):
    """A VOC folder with a white image for each annotation (of ``image_size`` where given)."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    for ann in anns:
        Image.new("RGB", image_size or (ann.width, ann.height), "white").save(
            root / "JPEGImages" / (ann.image.rsplit(".", 1)[0] + suffix))
        formats.write_voc(ann, root / "Annotations" / (ann.image.rsplit(".", 1)[0] + ".xml"))
    return root


def _field(name="f1.jpg", label="WBC"):
    return Annotation(name, 64, 48, [Box(10, 10, 30, 30, label)])


def test_an_annotation_whose_image_size_is_not_the_images_is_refused_by_name(tmp_path):
    voc = _voc(tmp_path / "voc", [_field()], image_size=(128, 96))
    with pytest.raises(AnnotationError, match=r"f1.xml: gives the image size 64x48, but f1.jpg is 128x96"):
        formats.load_dataset(voc)
    coco = tmp_path / "coco"
    coco.mkdir()
    Image.new("RGB", (128, 96), "white").save(coco / "f1.jpg")
    formats.write_coco([_field()], coco / "boxes.json")
    with pytest.raises(AnnotationError, match=r"boxes.json \(f1.jpg\): gives the image size 64x48"):
        formats.load_dataset(coco)


def test_yolo_boxes_are_placed_on_the_upright_image(tmp_path):
    """A camera's JPEG stored sideways with an EXIF turn: YOLO's fractions are of the upright image,
    the one every reader in Leukolab returns."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("WBC\n")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 wide, 40 high; shown turned a quarter: 40 wide, 80 high
    Image.new("RGB", (80, 40), "white").save(root / "images" / "f.jpg", exif=exif)
    (root / "labels" / "f.txt").write_text("0 0.5 0.25 0.5 0.25\n")
    [sample] = formats.load_dataset(root)
    assert (sample.annotation.width, sample.annotation.height) == (40, 80)
    assert sample.annotation.boxes[0].as_list() == pytest.approx([10, 10, 30, 30])


def test_labels_in_another_case_are_leukolabs_own_and_a_set_without_white_cells_is_refused(tmp_path, capsys):
    voc = _voc(tmp_path / "lower", [_field(label="wbc"), _field("f2.jpg", label="platelets")])
    samples = formats.load_dataset(voc)
    assert [b.label for s in samples for b in s.annotation.boxes] == ["WBC", "Platelets"]
    other = _voc(tmp_path / "other", [_field(label="Neutrophil")])
    for argv in (["evaluate", "--data", str(other), "--json"],
                 ["tune", "--data", str(other), "--out", str(tmp_path / "t.yaml"), "--trials", "1"],
                 ["train", "--data", str(other), "--out", str(tmp_path / "run"), "--epochs", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no box labelled WBC in 1 field(s) (labels found: Neutrophil)" in err and "Traceback" not in err
    assert not (tmp_path / "t.yaml").exists() and not (tmp_path / "run").exists()


def test_an_empty_part_of_the_split_is_refused(tmp_path, capsys):
    voc = _voc(tmp_path / "voc", [_field(), _field("f2.jpg")])
    assert main(["evaluate", "--data", str(voc), "--split", "test", "--json"]) == 2
    assert "no annotated fields in the 'test' part of the split" in capsys.readouterr().err


def test_metrics_of_nothing_are_null_in_json():
    text = dumps({"mean_iou": float("nan"), "per": [np.float32("inf"), 0.5], "n": np.int64(3)})
    assert json.loads(text) == {"mean_iou": None, "per": [None, 0.5], "n": 3}


def test_image_references_of_other_tools_are_found(tmp_path):
    voc = _voc(tmp_path / "voc", [_field("upper.jpg")], suffix=".JPG")  # the XML says .jpg
    assert formats.load_dataset(voc)[0].image_path.name == "upper.JPG"
    xml = voc / "Annotations" / "upper.xml"
    xml.write_text(xml.read_text().replace("<filename>upper.jpg</filename>", r"<filename>C:\scans\upper.jpg</filename>"))
    assert formats.load_dataset(voc)[0].image_path.name == "upper.JPG"
    xml.write_text(xml.read_text().replace(r"<filename>C:\scans\upper.jpg</filename>", ""))  # none: the XML's name
    assert formats.load_dataset(voc)[0].image_path.name == "upper.JPG"
    coco = tmp_path / "coco"
    (coco / "train").mkdir(parents=True)
    Image.new("RGB", (64, 48), "white").save(coco / "train" / "f1.jpg")
    formats.write_coco([_field("train/f1.jpg")], coco / "boxes.json")
    assert formats.load_dataset(coco)[0].image_path == coco / "train" / "f1.jpg"


@pytest.mark.parametrize("where, value, message", [
    ("<width>64</width>", "<width>inf</width>", "<width> is 'inf', not a number"),
    ("<xmin>10</xmin>", "<xmin>nan</xmin>", "<xmin> is 'nan', not a number"),
    ("<name>WBC</name>", "<name>WBC</name><score>high</score>", "<score> is 'high', not a number"),
])
def test_values_that_are_not_numbers_name_the_file(tmp_path, where, value, message):
    formats.write_voc(_field(), tmp_path / "odd.xml")
    (tmp_path / "odd.xml").write_text((tmp_path / "odd.xml").read_text().replace(where, value))
    with pytest.raises(AnnotationError, match=f"odd.xml: {message}"):
        formats.read_voc(tmp_path / "odd.xml")


def test_an_unreadable_image_in_a_dataset_is_named(tmp_path, capsys):
    voc = _voc(tmp_path / "voc", [_field()])
    data = (voc / "JPEGImages" / "f1.jpg").read_bytes()
    (voc / "JPEGImages" / "f1.jpg").write_bytes(data[: len(data) // 2])
    assert main(["evaluate", "--data", str(voc), "--json"]) == 2
    err = capsys.readouterr().err
    assert "f1.jpg: cannot read image" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--img-size", "100"], "--img-size must be a multiple of 8"),
    (["--backbone", "timm:no_such_model"], "backbone timm:no_such_model"),
    (["--scale-jitter", "2", "1"], "--scale-jitter LO HI needs LO <= HI"),
])
def test_training_options_that_cannot_work_are_refused(tmp_path, capsys, argv, message):
    voc = _voc(tmp_path / "voc", [_field(), _field("f2.jpg")])
    assert main(["train", "--data", str(voc), "--out", str(tmp_path / "run"), "--epochs", "1", "--val-every", "0",
                 *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--epochs", "0"], ["train", "--scale", "0"], ["evaluate", "--threads", "0"],
                                  ["tune"]])  # tune: no --out, which would overwrite the packaged parameters
def test_numbers_out_of_range_and_missing_outputs_are_usage_errors(tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--data", str(tmp_path), *(["--out", str(tmp_path / "r")] if argv[0] == "train" else [])])
    assert exc.value.code == 2


def test_val_every_and_scale_jitter_reach_the_training(tmp_path, monkeypatch):
    voc = _voc(tmp_path / "voc", [_field(f"f{i}.jpg") for i in range(9)])
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(fit, val, out, cfg, progress):
        seen.update(fit=len(fit), val=len(val), jitter=cfg.scale_jitter)
        raise Stop

    monkeypatch.setattr("ml.localization.train.train_detector", fake_train)
    with pytest.raises(Stop):
        main(["train", "--data", str(voc), "--out", str(tmp_path / "run"), "--val-every", "3",
              "--scale-jitter", "0.8", "1.5"])
    assert seen == {"fit": 6, "val": 3, "jitter": (0.8, 1.5)}


def test_a_checkpoint_means_the_deep_method(tmp_path, capsys):
    img = tmp_path / "f.jpg"
    Image.new("RGB", (64, 48), "white").save(img)
    assert main(["predict", "--method", "classical", "--checkpoint", str(tmp_path / "run"), str(img)]) == 2
    assert "use --method deep" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "no-run"), str(img)]) == 2  # taken as deep: no such run
    assert "no-run" in capsys.readouterr().err


def test_a_grey_image_is_named_with_why_its_results_are_unreliable(caplog, tmp_path):
    import logging

    from ml.imageio import read_image
    from ml.localization.classical import ClassicalLocalizer
    from ml.localization.synthetic import synthetic_field

    img, _ = synthetic_field(seed=0, n_wbc=1)
    Image.fromarray(img).save(tmp_path / "colour.png")
    grey = np.repeat(img.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with caplog.at_level(logging.WARNING):
        read_image(tmp_path / "colour.png")
    assert "grey image" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert ClassicalLocalizer().detect(read_image(tmp_path / "grey.png")) == []
    assert "grey.png: a grey image" in caplog.text and "unreliable" in caplog.text


def test_a_reference_outside_the_dataset_is_not_followed(tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    Image.new("RGB", (64, 48), "white").save(tmp_path / "outside.jpg")
    formats.write_coco([_field("../outside.jpg")], coco / "boxes.json")
    with pytest.raises(AnnotationError, match=r"image '../outside.jpg' not found"):
        formats.load_dataset(coco)
    voc = _voc(tmp_path / "voc", [_field()])
    assert formats.read_voc(voc / "Annotations" / "f1.xml", labels=["wbc"]).boxes[0].label == "WBC"


def test_predict_names_an_unreadable_image_and_does_the_others(tmp_path, capsys):
    Image.new("RGB", (64, 48), "white").save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:40])
    assert main(["predict", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)["images"]
    assert out[0]["boxes"] == [] and out[0]["width"] == 64
    assert "b.jpg" in out[1]["error"] and "boxes" not in out[1]
    assert "b.jpg" in captured.err and "Traceback" not in captured.err


def test_the_train_commands_help_gives_the_default_number_of_epochs():
    from ml.localization.__main__ import build_parser
    from ml.localization.train import TrainConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    assert f"TrainConfig's, {TrainConfig.epochs})" in " ".join(train.format_help().split())


def test_predict_with_no_readable_image_is_an_error(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.jpg")]) == 2
    (entry,) = json.loads(capsys.readouterr().out)["images"]  # one image: the same shape as several
    assert "missing.jpg" in entry["error"]
