"""bench/classification.py end to end on a few generated cells: the rows it reports, and that its
training-thread option reaches training."""
import json

from tests.helpers import load_bench, write_class_folders

bench = load_bench("classification")


def test_bench_trains_with_the_threads_given_and_reports_a_row(tmp_path, monkeypatch, torch_threads):
    from ml.classification.data import synthetic_cells

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    cells = synthetic_cells(n_per_class=12, seed=3, classes=["lymphocyte", "neutrophil"])
    data = tmp_path / "cells"
    write_class_folders(cells, data)
    out = tmp_path / "bench"
    assert bench.main(["--data", str(data), "--tecom", str(tmp_path / "no-tecom"), "--models",
                       "cbam_cnn_small", "--budget-s", "3", "--folds", "0", "--train-threads", "2",
                       "--out", str(out)]) == 0
    assert json.loads((out / "cbam_cnn_small" / "config.json").read_text())["threads"] == 2
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert row["model"] == "cbam_cnn_small" and 0.0 <= row["accuracy"] <= 1.0 and row["epochs"] >= 1
    assert row["tecom_accuracy"] is None  # no second lab given: nothing made up
