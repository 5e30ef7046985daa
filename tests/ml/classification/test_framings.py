"""A classifier answering each cell over several framings of its box (ml/classification/framings.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ml.boxes import Box
from ml.classification.artifact import check_framing_below, check_framings, load_classifier, save_checkpoint
from ml.classification.data import fixed_split, synthetic_cells
from ml.classification.metrics import softmax
from ml.classification.train import TrainConfig, fit
from tests.helpers import write_class_folders

BOXES = [Box(58, 68, 102, 112), Box(205, 135, 255, 185)]


def test_framings_are_checked_and_kept_sorted():
    assert check_framings([1.1, 0.9, 1, 1.0]) == (0.9, 1.0, 1.1)
    assert check_framings((1,)) == (1.0,)
    for bad in ([], [0.0], [2.5], [0.9, 1.1], [0.9, 1, 1.1, 1.2, 1.3, 1.4], ["wide"], None):
        with pytest.raises(ValueError, match="framings"):
            check_framings(bad)
    assert check_framing_below(None) is None and check_framing_below("0.9") == 0.9
    for bad in (0, 1.5, "sure"):
        with pytest.raises(ValueError, match="confidence bound"):
            check_framing_below(bad)


def _with_framings(saved_classifier, out, framings, below=None):
    clf = load_classifier(saved_classifier)
    save_checkpoint(out / "best.pt", clf.model, architecture=clf.architecture, model_kwargs=clf.model_kwargs,
                    classes=clf.classes, crop=clf.crop_rule, temperature=clf.temperature, framings=framings,
                    framing_below=below)
    return load_classifier(out)


def test_a_cells_answer_is_the_mean_of_its_framings_logits(saved_classifier, tmp_path, smear):
    one = load_classifier(saved_classifier)
    three = _with_framings(saved_classifier, tmp_path, [1.1, 0.9, 1.0])
    assert one.framings == (1.0,) and three.framings == (0.9, 1.0, 1.1)
    assert three.version != one.version
    expected = np.mean([one.logits_of_crops(one.crops(smear, [b.scaled(f) for b in BOXES])) for f in (0.9, 1, 1.1)], 0)
    np.testing.assert_allclose(three.logits_of_boxes(smear, BOXES), expected, rtol=1e-5, atol=1e-5)
    got = [p.probabilities for p in three.classify(smear, BOXES)]
    want = softmax(three.scaled_logits(expected), three.temperature)
    for g, w in zip(got, want):
        np.testing.assert_allclose([g[c] for c in three.classes], w, rtol=1e-5, atol=1e-6)
    # the answers differ from those of the box as found, which one framing gives back exactly
    single = [p.probabilities for p in one.classify(smear, BOXES)]
    assert not np.allclose([g[c] for g in got for c in one.classes], [s[c] for s in single for c in one.classes])
    np.testing.assert_allclose(one.logits_of_boxes(smear, BOXES), one.logits_of_crops(one.crops(smear, BOXES)))
    # the statistics and the heatmaps keep the box as found: one map of the crop's size per cell
    maps = three.heatmaps(smear, BOXES)
    assert len(maps) == 2 and maps[0].shape == (three.crop_rule.out_size,) * 2


def test_only_the_uncertain_cells_are_cut_again(saved_classifier, tmp_path, smear):
    one = load_classifier(saved_classifier)
    boxes = [BOXES[0], Box(95, 60, 135, 100)]  # a white cell, and a box beside it over its edge
    first = softmax(one.scaled_logits(one.logits_of_crops(one.crops(smear, boxes))), one.temperature).max(1)
    assert abs(first[0] - first[1]) > 1e-4
    below = float(first.mean())  # one cell under the bound, the other over it
    gated = _with_framings(saved_classifier, tmp_path, [0.9, 1, 1.1], below=below)
    assert gated.framing_below == pytest.approx(below)
    everything = _with_framings(saved_classifier, tmp_path / "all", [0.9, 1, 1.1])
    assert gated.version != everything.version
    got, framed, single = (c.logits_of_boxes(smear, boxes) for c in (gated, everything, one))
    unsure = int(first.argmin())
    np.testing.assert_allclose(got[unsure], framed[unsure], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1 - unsure], single[1 - unsure], rtol=1e-5, atol=1e-5)
    assert not np.allclose(framed[1 - unsure], single[1 - unsure])


def test_the_cli_saves_a_run_again_with_framings_and_a_refitted_temperature(tmp_path, monkeypatch, capsys):
    from ml.classification.__main__ import main
    from ml.classification.data import load_folder
    from ml.classification.evaluate import evaluate_cells, labelled_logits
    from ml.classification.metrics import fit_temperature

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_class_folders(synthetic_cells(n_per_class=14, classes=["lymphocyte", "monocyte", "neutrophil"]), data)
    cells = load_folder(data)
    tr, va, te = fixed_split(cells.names, cells.labels)
    run = fit(TrainConfig(img_size=32, batch=8, epochs=1), cells.subset(tr), cells.subset(va), tmp_path / "run")

    assert main(["framings", str(run), "--scales", "0.9", "1", "1.1", "--data", str(data), "--below", "1",
                 "--out", str(tmp_path / "framed")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["framings"] == [0.9, 1.0, 1.1] and printed["test"]["n"] == len(te)
    assert printed["framing_below"] is None and printed["framed_share_test"] == 1.0
    framed = load_classifier(tmp_path / "framed")
    assert framed.framings == (0.9, 1.0, 1.1) and framed.version != load_classifier(run).version
    logits, y = labelled_logits(framed, cells.subset(va))
    assert framed.temperature == pytest.approx(fit_temperature(logits, y))
    assert evaluate_cells(framed, cells.subset(te))["accuracy"] == pytest.approx(printed["test"]["accuracy"])
    assert printed["test_one_framing"]["accuracy"] == pytest.approx(
        evaluate_cells(load_classifier(run), cells.subset(te))["accuracy"])
    # evaluate answers over the framings it is given, and refuses impossible ones
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--split", "test",
                 "--framings", "0.9", "1", "1.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(printed["test"]["accuracy"], abs=0.2)
    assert main(["framings", str(run), "--scales", "0.9", "1", "1.1", "--data", str(data),
                 "--out", str(tmp_path / "gated")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["framing_below"] == 0.9 and 0.0 <= printed["framed_share_test"] <= 1.0
    assert load_classifier(tmp_path / "gated").framing_below == 0.9
    for bad in (["0"], ["1", "3"], ["0.9", "1.1"]):
        assert main(["framings", str(run), "--scales", *bad, "--data", str(data), "--out", str(tmp_path / "x")]) == 2
        assert "framings" in capsys.readouterr().err
        assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--framings", *bad]) == 2
        assert "framings" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_analyze_answers_over_the_framings_asked_for(saved_classifier, tmp_path, smear, capsys):
    from PIL import Image

    from ml.analyze import main

    Image.fromarray(smear).save(tmp_path / "field.png")
    base = ["--classifier", str(saved_classifier), str(tmp_path / "field.png"), "--json", "--norm", "off"]
    assert main(base) == 0
    one = json.loads(capsys.readouterr().out)["images"][0]["cells"]
    assert main(base + ["--framings", "0.9", "1", "1.1"]) == 0
    three = json.loads(capsys.readouterr().out)["images"][0]["cells"]
    assert [c["box"] for c in one] == [c["box"] for c in three] and len(one) >= 1
    clf = load_classifier(saved_classifier, prior="blood")
    clf.framings = (0.9, 1.0, 1.1)
    boxes = [Box(*c["box"]) for c in three]
    for cell, p in zip(three, clf.classify(smear, boxes)):
        assert cell["class"] == p.label and cell["confidence"] == pytest.approx(p.confidence, abs=1e-4)
    assert main(base + ["--framings", "5"]) == 2
    assert "framings" in capsys.readouterr().err


def test_the_speed_bench_times_the_framings(saved_classifier, tmp_path, monkeypatch, capsys, torch_threads):
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_class_folders(synthetic_cells(n_per_class=14, classes=["lymphocyte", "monocyte", "neutrophil"]), data)
    path = Path(__file__).resolve().parents[3] / "bench" / "served_speed.py"
    spec = importlib.util.spec_from_file_location("served_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--checkpoint", str(saved_classifier), "--cells", "20", "--threads", "1", "--repeats", "1"]
    assert bench.main(args + ["--data", str(data), "--framings", "0.9", "1", "1.1"]) == 0
    out = capsys.readouterr().out
    assert "framings 0.9, 1, 1.1" in out and out.strip().splitlines()[-1].split()[:2] == ["20", "1"]
    with pytest.raises(SystemExit):
        bench.main(args + ["--framings", "0.9", "1"])
    assert bench.main(args + ["--data", str(data), "--framings", "0.9", "1", "--corruption", "blur:1"]) == 2
