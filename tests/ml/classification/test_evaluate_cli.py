"""``python -m ml.classification evaluate`` on a second lab laid out as tecom: one sample of cells."""
import json

import numpy as np
import pytest

from ml.classification.__main__ import main


def _scores(capsys, *args):
    assert main(["evaluate", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_second_lab_is_scored_as_trained_and_adapted_to_as_one_sample(saved_classifier, second_lab, tmp_path,
                                                                         capsys):
    common = ["--checkpoint", saved_classifier, "--data", second_lab, "--prior", "blood", "--plots", tmp_path / "p"]
    plain = _scores(capsys, *common)
    assert plain["adapt"] is None and plain["norm"] is None and 0 <= plain["accuracy"] <= 1
    adapted = _scores(capsys, *common, "--adapt", "0")
    freq = adapted["sample_frequencies"]
    assert set(freq) >= {"neutrophil", "erythroblast"} and sum(freq.values()) == pytest.approx(1, abs=1e-6)
    normed = _scores(capsys, *common, "--norm", "0")
    balanced = _scores(capsys, *common, "--norm", "0", "--norm-balanced")
    assert normed["norm"] == 0 and balanced["norm_balanced"] and not normed["norm_balanced"]
    # the sample's own statistics change what this (untrained, random-statistics) network answers
    assert normed["confusion_matrix"] != plain["confusion_matrix"] or normed["ece"] != plain["ece"]


def test_adapting_a_class_folder_is_refused(saved_classifier, tmp_path, capsys):
    folder = tmp_path / "cells"
    (folder / "neutrophil").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.full((60, 60, 3), 200, np.uint8)).save(folder / "neutrophil" / "a.png")
    assert main(["evaluate", "--checkpoint", str(saved_classifier), "--data", str(folder), "--adapt", "100"]) == 2
    assert "tecom-style folder" in capsys.readouterr().err


def test_a_second_lab_as_analyzed_uses_the_prior_boxes_and_statistics_of_ml_analyze(saved_classifier, second_lab):
    from ml.analyze import NORM_DEFAULT, parse_cells
    from ml.classification import load_classifier
    from ml.classification.evaluate import evaluate_tecom, evaluate_tecom_as_analyzed

    clf = load_classifier(saved_classifier)
    got = evaluate_tecom_as_analyzed(clf, second_lab)
    assert clf.prior_name == "uniform" and clf.prior is None  # the classifier's own prior is left as it was
    assert got["prior"] == "blood" and got["boxes"] == "localizer"
    assert got["norm"] == parse_cells(NORM_DEFAULT) and got["norm_balanced"] == (got["norm"] is not None)
    want = evaluate_tecom(load_classifier(saved_classifier, prior="blood"), second_lab, boxes="localizer",
                          norm=got["norm"], norm_balanced=got["norm_balanced"])
    assert got["confusion_matrix"] == want["confusion_matrix"] and got["accuracy"] == want["accuracy"]


def test_boxes_scaled_about_their_centres_frame_the_cells_differently(saved_classifier, second_lab):
    from ml.boxes import Box
    from ml.classification import load_classifier
    from ml.classification.evaluate import evaluate_tecom

    b = Box(10, 20, 50, 40, "WBC", 0.7).scaled(1.5)
    assert (b.x0, b.y0, b.x1, b.y1, b.label, b.score) == (0, 15, 60, 45, "WBC", 0.7)
    clf = load_classifier(saved_classifier)
    plain = evaluate_tecom(clf, second_lab)
    assert evaluate_tecom(clf, second_lab, box_scale=1.0) == plain
    wider = evaluate_tecom(clf, second_lab, box_scale=1.6)
    # this untrained network answers from what the crop holds: another framing, other answers
    assert wider["confusion_matrix"] != plain["confusion_matrix"] or wider["ece"] != plain["ece"]
    with pytest.raises(ValueError, match="box_scale"):
        evaluate_tecom(clf, second_lab, box_scale=0)


def test_a_run_scored_on_another_lab_keeps_its_confusions_as_trained_and_as_analyzed(saved_classifier, second_lab,
                                                                                      small_cells, tmp_path, monkeypatch):
    """What the model registry shows of the other lab: scores and each class's F1 with expert boxes and as
    slides are answered, and a confusion matrix of each."""
    import shutil

    from ml.classification import score_run
    from ml.classification.evaluate import RUN_FIGURES

    run = tmp_path / "run"
    shutil.copytree(saved_classifier, run)
    shutil.copy(run / "best.pt", run / "last.pt")  # a trained run keeps both
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "tecom").symlink_to(second_lab)
    monkeypatch.setenv("LEUKOLAB_DATASETS", str(tmp_path / "datasets"))
    cells, _ = small_cells
    score_run(run, cells.subset(np.arange(0, len(cells), 9)))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("tecom", "tecom_analyze"):
        assert metrics[key]["n"] == 10 and set(metrics[key]["f1"]) <= {"neutrophil", "lymphocyte", "monocyte",
                                                                        "eosinophil", "basophil"}
    assert metrics["tecom_analyze"]["prior"] == "blood" and metrics["tecom_analyze"]["boxes"] == "localizer"
    for name in ("confusion_other_lab.png", "confusion_other_lab_analyzed.png"):
        assert name in RUN_FIGURES and (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
