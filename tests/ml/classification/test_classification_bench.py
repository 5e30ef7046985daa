"""bench/classification.py end to end on a few generated cells: the rows it reports, and that its
training-thread option reaches training."""
import importlib.util
import json
from pathlib import Path

import torch

from tests.helpers import write_class_folders

_spec = importlib.util.spec_from_file_location(
    "classification_bench", Path(__file__).resolve().parents[3] / "bench" / "classification.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_bench_trains_with_the_threads_given_and_reports_a_row(tmp_path, monkeypatch):
    from ml.classification.data import synthetic_cells

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    cells = synthetic_cells(n_per_class=12, seed=3, classes=["lymphocyte", "neutrophil"])
    data = tmp_path / "cells"
    write_class_folders(cells, data)
    out = tmp_path / "bench"
    threads = torch.get_num_threads()  # the benchmark sets the process's inference threads
    try:
        code = bench.main(["--data", str(data), "--tecom", str(tmp_path / "no-tecom"), "--models",
                           "cbam_cnn_small", "--budget-s", "3", "--folds", "0", "--train-threads", "2",
                           "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert json.loads((out / "cbam_cnn_small" / "config.json").read_text())["threads"] == 2
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert row["model"] == "cbam_cnn_small" and 0.0 <= row["accuracy"] <= 1.0 and row["epochs"] >= 1
    assert row["tecom_accuracy"] is None  # no second lab given: nothing made up
