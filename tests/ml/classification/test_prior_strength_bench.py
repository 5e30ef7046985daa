"""bench/prior_strength.py: its scores of a smear's mix by hand, and a run end to end on generated cells."""

import numpy as np
import pytest

from tests.helpers import load_bench, write_class_folders

bench = load_bench("prior_strength")

CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def test_a_mix_weighs_each_class_by_its_share():
    # ten cells of each of the five; the monocytes: 6 right, 3 called neutrophils, 1 a platelet
    y = np.repeat(np.arange(5), 10)
    pred = y.copy()
    pred[30:33] = 4
    pred[33] = 5
    share = {"basophil": 0.1, "eosinophil": 0.1, "lymphocyte": 0.2, "monocyte": 0.2, "neutrophil": 0.4}
    accuracy, f1 = bench.mix_scores(y, pred, CLASSES, share)
    assert accuracy == pytest.approx(0.1 + 0.1 + 0.2 + 0.2 * 0.6 + 0.4)
    # monocyte: precision 1, recall 0.6; neutrophil: recall 1, precision 0.4 / (0.4 + 0.2 * 0.3)
    p_neutrophil = 0.4 / 0.46
    expected = (3 + 2 * 0.6 / 1.6 + 2 * p_neutrophil / (1 + p_neutrophil)) / 5
    assert f1 == pytest.approx(expected)
    # the same answers in a mix with more monocytes score lower
    assert bench.mix_scores(y, pred, CLASSES, {**share, "monocyte": 0.6})[0] < accuracy
    # cells of a class outside the five are left out; a class without cells is an error
    assert bench.mix_scores(np.append(y, 5), np.append(pred, 0), CLASSES, share) == (accuracy, f1)
    with pytest.raises(ValueError, match="no basophil"):
        bench.mix_scores(y[10:], pred[10:], CLASSES, share)


def test_the_bench_scores_each_power_of_the_prior(tmp_path, monkeypatch, capsys, torch_threads):
    from ml.classification.data import fixed_split, load_folder, synthetic_cells
    from ml.classification.train import TrainConfig, fit

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    cells = synthetic_cells(n_per_class=12, seed=4, classes=CLASSES[:5])
    data = tmp_path / "cells"
    write_class_folders(cells, data)
    on_disk = load_folder(data)
    tr, va, _ = fixed_split(on_disk.names, on_disk.labels)
    run = fit(TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=1),
              on_disk.subset(tr), on_disk.subset(va), tmp_path / "run")
    assert bench.main(["--checkpoint", str(run), str(run), "--data", str(data), "--alphas", "0", "1",
                       "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0] in ("0.00", "1.00")]
    assert len(rows) == 4
    assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r[1:])
    assert rows[0] == rows[2] and rows[1] == rows[3]  # the same run twice scores the same
    assert "mean score over the runs" in out and "best alpha" in out
    with pytest.raises(SystemExit):
        bench.main(["--checkpoint", str(run), "--data", str(data), "--alphas", "5"])
    assert bench.main(["--checkpoint", str(tmp_path / "none"), "--data", str(data)]) == 2
    assert bench.main(["--checkpoint", str(run), "--data", str(tmp_path / "no-cells")]) == 2
