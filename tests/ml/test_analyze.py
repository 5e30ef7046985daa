"""Whole-field analysis: localize, classify with the saved model, report in original pixels."""
import json

import numpy as np
import pytest

from ml.analyze import analyze_image, main
from ml.boxes import Box


class FixedLocalizer:
    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image, *, progress=None, rescale=None):
        if progress:
            progress(1.0)
        return list(self.boxes)


@pytest.fixture
def run_dir(tmp_path):
    import torch

    from ml.classification.artifact import save_checkpoint
    from ml.classification.crop import CropRule
    from ml.classification.registry import create_classifier

    torch.manual_seed(0)
    classes = ["basophil", "eosinophil", "lymphocyte"]
    model = create_classifier("cbam_cnn_small", len(classes))
    save_checkpoint(tmp_path / "run" / "best.pt", model, architecture="cbam_cnn_small", model_kwargs={},
                    classes=classes, crop=CropRule(0.2, 32))
    return tmp_path / "run"


def _field():
    import cv2

    img = np.full((120, 160, 3), (230, 220, 225), np.uint8)
    cv2.circle(img, (40, 40), 15, (90, 40, 130), -1)
    cv2.circle(img, (120, 80), 18, (90, 40, 130), -1)
    return img


def test_analyze_classifies_each_localized_cell_with_the_model_classes(run_dir):
    from ml.classification import load_classifier

    boxes = [Box(25, 25, 55, 55), Box(102, 62, 138, 98)]
    seen = []
    cells = analyze_image(_field(), localizer=FixedLocalizer(boxes), classifier=load_classifier(run_dir),
                          heatmaps=True, progress=seen.append)
    assert [c.box for c in cells] == boxes
    for c in cells:
        assert c.label in ("basophil", "eosinophil", "lymphocyte")
        assert set(c.probabilities) == {"basophil", "eosinophil", "lymphocyte"}
        assert c.confidence == pytest.approx(c.probabilities[c.label])
        assert c.heatmap_overlay.shape == (32, 32, 3) and c.heatmap_overlay.dtype == np.uint8
    assert seen[-1] == 1.0


def test_analyze_without_classifier_only_localizes():
    cells = analyze_image(_field(), localizer=FixedLocalizer([Box(0, 0, 10, 10)]))
    assert len(cells) == 1 and cells[0].label is None


def test_cli_prints_one_json_object_with_boxes_in_original_pixels(run_dir, tmp_path, capsys):
    from PIL import Image

    from ml.localization.synthetic import synthetic_field

    field, truth = synthetic_field(seed=3, n_wbc=2)  # at BCCD's scale, which the classical method is tuned for
    path = tmp_path / "field.png"
    Image.fromarray(field).save(path)
    assert main([str(path), "--classifier", str(run_dir), "--json", "--heatmaps", str(tmp_path / "hm")]) == 0
    out = json.loads(capsys.readouterr().out)
    image = out["images"][0]
    assert image["path"] == str(path)
    assert len(image["cells"]) == 2, "the classical localizer should find the two white cells"
    for cell in image["cells"]:
        x0, y0, x1, y1 = cell["box"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        assert max(Box(x0, y0, x1, y1).iou(t) for t in truth if t.label == "WBC") >= 0.5
        assert cell["class"] in cell["probabilities"]
        assert sum(cell["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(list((tmp_path / "hm").glob("*.png"))) == len(image["cells"])


def test_cli_says_which_images_are_grey_and_still_answers_for_them(tmp_path, capsys):
    from PIL import Image

    from ml.localization.synthetic import synthetic_field

    field, _ = synthetic_field(seed=3, n_wbc=2)
    Image.fromarray(field).save(tmp_path / "colour.png")
    Image.fromarray(field).convert("L").save(tmp_path / "grey.png")
    assert main([str(tmp_path / "colour.png"), str(tmp_path / "grey.png"), "--json"]) == 0
    captured = capsys.readouterr()
    colour, grey = json.loads(captured.out)["images"]
    assert "warning" not in colour and len(colour["cells"]) == 2
    assert grey["warning"].startswith("a grey image (no colour)") and "cells" in grey
    assert captured.err.count("warning:") == 1 and "grey.png" in captured.err


def test_cli_bad_image_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing.png"), "--json"]) == 2
    assert "error:" in capsys.readouterr().err


def test_a_bad_class_prior_is_a_clear_error(run_dir, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(_field()).save(tmp_path / "f.png")
    assert main(["--classifier", str(run_dir), "--prior", "bloood", str(tmp_path / "f.png"), "--json"]) == 2
    assert "unknown class prior" in capsys.readouterr().err


def test_adaptation_to_a_sample_moves_its_cells_towards_its_own_frequencies(run_dir):
    from ml.analyze import CellResult, adapt_to_sample
    from ml.classification import load_classifier

    clf = load_classifier(run_dir, prior={"basophil": 0.1, "eosinophil": 0.1, "lymphocyte": 0.8})
    # 40 cells that look like eosinophils, one doubtful between eosinophil and lymphocyte
    clear = {"basophil": 0.02, "eosinophil": 0.9, "lymphocyte": 0.08}
    doubtful = {"basophil": 0.02, "eosinophil": 0.3, "lymphocyte": 0.68}
    images = [[CellResult(box=Box(0, 0, 9, 9), label="eosinophil", probabilities=dict(clear), confidence=0.9)
               for _ in range(40)],
              [CellResult(box=Box(0, 0, 9, 9), label="lymphocyte", probabilities=dict(doubtful), confidence=0.68),
               CellResult(box=Box(0, 0, 9, 9))]]  # found but not classified: left alone
    freq = adapt_to_sample(images, clf, strength=10)
    assert freq["eosinophil"] > 0.5 and sum(freq.values()) == pytest.approx(1)
    cell = images[1][0]
    assert cell.label == "eosinophil" and cell.confidence == pytest.approx(cell.probabilities["eosinophil"])
    assert sum(cell.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert images[1][1].label is None and images[1][1].probabilities == {}
    # without classified cells there is nothing to estimate
    assert adapt_to_sample([[CellResult(box=Box(0, 0, 9, 9))]], clf, strength=10) is None


def test_cli_adapts_over_all_images_or_each_and_refuses_a_negative_strength(run_dir, tmp_path, capsys):
    from PIL import Image

    from ml.localization.synthetic import synthetic_field

    paths = []
    for seed in (3, 4):
        field, _ = synthetic_field(seed=seed, n_wbc=2)
        paths.append(tmp_path / f"field{seed}.png")
        Image.fromarray(field).save(paths[-1])
    outs = {}
    for mode in ("off", "image", "all"):
        assert main([*map(str, paths), "--classifier", str(run_dir), "--adapt", mode, "--json"]) == 0
        outs[mode] = json.loads(capsys.readouterr().out)
    n = [len(im["cells"]) for im in outs["off"]["images"]]
    assert n == [len(im["cells"]) for im in outs["all"]["images"]] and sum(n) >= 2
    for mode in ("image", "all"):
        for im in outs[mode]["images"]:
            for cell in im["cells"]:
                assert sum(cell["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
                assert cell["class"] == max(cell["probabilities"], key=cell["probabilities"].get)
    assert main([str(paths[0]), "--classifier", str(run_dir), "--adapt-strength", "-1", "--json"]) == 2
    assert "--adapt-strength" in capsys.readouterr().err


class RefusingLocalizer:
    def detect(self, image, **kwargs):
        raise AssertionError("the localizer was asked although the cells were given")


def test_analyze_classifies_given_boxes_without_asking_the_localizer(run_dir):
    from ml.classification import load_classifier

    boxes = [Box(25, 25, 55, 55)]
    cells = analyze_image(_field(), localizer=RefusingLocalizer(), classifier=load_classifier(run_dir), boxes=boxes)
    assert [c.box for c in cells] == boxes and cells[0].label is not None


def test_the_classifier_is_normalized_on_a_sample_only_when_asked_and_when_it_holds_cells(run_dir):
    import torch

    from ml.analyze import classifier_for_sample, parse_cells
    from ml.classification import load_classifier

    clf = load_classifier(run_dir)
    crops = [clf.crops(_field(), [Box(25, 25, 55, 55), Box(102, 62, 138, 98)]), clf.crops(_field(), [])]
    assert classifier_for_sample(clf, crops, None) is clf
    assert classifier_for_sample(clf, [crops[1]], 100.0) is clf
    other = classifier_for_sample(clf, crops, 0.0)
    bn = [m for m in other.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    trained = [m for m in clf.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.allclose(bn.running_mean, trained.running_mean)  # the sample's own statistics
    assert torch.equal(trained.running_mean, torch.zeros_like(trained.running_mean))  # the original is untouched
    assert parse_cells("off") is None and parse_cells("OFF") is None and parse_cells("250") == 250.0
    for bad in ("-1", "many", "nan"):
        with pytest.raises(ValueError, match="number of cells"):
            parse_cells(bad)


def test_cli_normalizes_on_the_cells_of_all_its_images(run_dir, tmp_path, capsys):
    from PIL import Image

    from ml.analyze import classifier_for_sample
    from ml.classification import load_classifier
    from ml.localization import load_localizer
    from ml.localization.scale import parse_rescale
    from ml.localization.synthetic import synthetic_field

    paths, fields = [], []
    for seed in (3, 4):
        field, _ = synthetic_field(seed=seed, n_wbc=2)
        fields.append(field)
        paths.append(tmp_path / f"field{seed}.png")
        Image.fromarray(field).save(paths[-1])
    outs = {}
    for norm in ("off", "0"):
        assert main([*map(str, paths), "--classifier", str(run_dir), "--norm", norm, "--json"]) == 0
        outs[norm] = json.loads(capsys.readouterr().out)
    # what the command answers with --norm 0: the classifier normalized on the cells of both images
    localizer = load_localizer("classical", rescale=parse_rescale("auto"))  # as the command loads it
    clf = load_classifier(run_dir, prior="blood")
    boxes = [localizer.detect(f) for f in fields]
    assert sum(map(len, boxes)) >= 2
    normalized = classifier_for_sample(clf, [clf.crops(f, b) for f, b in zip(fields, boxes)], 0.0)
    for norm, c in (("off", clf), ("0", normalized)):
        for im, f, b in zip(outs[norm]["images"], fields, boxes):
            assert [cell["box"] for cell in im["cells"]] == [[round(v, 1) for v in x.as_list()] for x in b]
            expected = c.classify(f, b)
            got = [cell["probabilities"] for cell in im["cells"]]
            assert np.allclose([[p[k] for k in clf.classes] for p in got],
                               [[e.probabilities[k] for k in clf.classes] for e in expected], atol=1e-4)
    first_off = outs["off"]["images"][0]["cells"][0]["probabilities"]
    first_norm = outs["0"]["images"][0]["cells"][0]["probabilities"]
    assert not np.allclose(list(first_off.values()), list(first_norm.values()), atol=1e-3)
    for bad in ("-5", "lots"):
        assert main([str(paths[0]), "--classifier", str(run_dir), "--norm", bad, "--json"]) == 2
        assert "--norm" in capsys.readouterr().err


def test_many_cells_are_classified_in_chunks_with_progress_and_the_same_answers(run_dir, monkeypatch):
    """A scan's thousands of cells report their progress chunk by chunk; each cell's answer and
    heatmap are those it gets when all cells go at once."""
    import ml.analyze as analyze
    from ml.classification import load_classifier

    rng = np.random.default_rng(0)
    boxes = [Box(x, y, x + 30, y + 30) for x, y in rng.integers(0, 120, (10, 2))]
    clf = load_classifier(run_dir)
    whole = analyze_image(_field(), localizer=RefusingLocalizer(), classifier=clf, boxes=boxes, heatmaps=True)
    monkeypatch.setattr(analyze, "CLASSIFY_CHUNK", 3)
    seen = []
    chunked = analyze_image(_field(), localizer=RefusingLocalizer(), classifier=clf, boxes=boxes, heatmaps=True,
                            progress=seen.append)
    for a, b in zip(whole, chunked):
        assert a.label == b.label
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert np.abs(a.heatmap_overlay.astype(int) - b.heatmap_overlay.astype(int)).max() <= 1
    assert len(seen) >= 8 and seen == sorted(seen) and seen[-1] == 1.0  # 4 chunks classified, 4 explained
    assert 0 < seen[0] < 1
