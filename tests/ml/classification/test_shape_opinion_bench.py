"""bench/shape_opinion.py: its further measurements on drawn cells, and a run end to end on generated cells."""

import cv2
import numpy as np
import pytest

from ml.classification.morphometry import MEASURE_SIZE

from tests.helpers import load_bench, write_class_folders

bench = load_bench("shape_opinion")

PALE, CYTOPLASM, NUCLEUS = (235, 235, 235), (215, 190, 215), (80, 40, 150)


def cell(draw=None, nuclei=((48, 48, 18),)) -> np.ndarray:
    img = np.full((MEASURE_SIZE, MEASURE_SIZE, 3), PALE, np.uint8)
    cv2.circle(img, (48, 48), 44, CYTOPLASM, -1)
    for x, y, r in nuclei:
        cv2.circle(img, (x, y), r, NUCLEUS, -1)
    if draw:
        draw(img)
    return img


def measured(img: np.ndarray) -> dict:
    return dict(zip(bench.EXTRA, bench.extra_measures(img[None], 0.0)[0]))


def test_the_layout_of_a_nucleus():
    round_ = measured(cell())
    assert round_["nucleus_elongation"] > 0.9 and round_["nucleus_offset"] < 0.05 and round_["nucleus_fold"] < 0.1
    oval = measured(cell(lambda im: cv2.ellipse(im, (48, 48), (26, 11), 30, 0, 360, NUCLEUS, -1), nuclei=()))
    assert oval["nucleus_elongation"] == pytest.approx(11 / 26, abs=0.08)
    aside = measured(cell(nuclei=((30, 48, 14),)))
    assert aside["nucleus_offset"] == pytest.approx(18 / (MEASURE_SIZE * 0.48), abs=0.05)
    kidney = measured(cell(lambda im: cv2.circle(im, (48, 28), 12, CYTOPLASM, -1)))  # a notch bitten out
    assert kidney["nucleus_fold"] > round_["nucleus_fold"] + 0.1
    assert not bench.extra_measures(np.full((2, 40, 40, 3), 200, np.uint8), 0.0).any()  # blank: nothing measured


def test_the_densities_are_the_cells_own_ratios():
    plain = cell(nuclei=((48, 48, 16),))
    f = measured(plain)
    assert f["nucleus_cytoplasm_density"] > 2 and f["cytoplasm_texture"] < 0.2
    rng = np.random.default_rng(0)

    def granules(im):
        for x, y in rng.integers(10, 86, (300, 2)):
            if np.hypot(x - 48, y - 48) > 19:
                cv2.circle(im, (int(x), int(y)), 1, (150, 90, 150), -1)

    assert measured(cell(granules, nuclei=((48, 48, 16),)))["cytoplasm_texture"] > f["cytoplasm_texture"] + 0.1
    pale = (256 * ((plain.astype(np.float32) + 1) / 256) ** 0.7 - 1).astype(np.uint8)  # 30 % less dye
    assert measured(pale)["nucleus_cytoplasm_density"] == pytest.approx(f["nucleus_cytoplasm_density"], rel=0.2)


def test_the_bench_reports_each_way_on_generated_cells(tmp_path, monkeypatch, capsys, torch_threads):
    from ml.classification.data import fixed_split, load_folder, synthetic_cells
    from ml.classification.train import TrainConfig, fit

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    cells = synthetic_cells(n_per_class=14, seed=3, classes=["lymphocyte", "neutrophil"])
    data = tmp_path / "cells"
    write_class_folders(cells, data)
    on_disk = load_folder(data)
    tr, va, _ = fixed_split(on_disk.names, on_disk.labels)
    run = fit(TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=1, shape_opinion=True),
              on_disk.subset(tr), on_disk.subset(va), tmp_path / "run")
    assert bench.main(["--checkpoint", str(run), "--data", str(data), "--measures", "6", "13",
                       "--weight-under-shift", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    assert [" ".join(r.split()[:2]) for r in rows] == [
        "network alone", "6 measurements,", "6 measurements,", "13 measurements,", "13 measurements,"]
    assert ["(shift)" in r for r in rows] == [False, False, True, False, True]
    assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r.replace("(shift)", "").split()[-3:])  # acc, ECE, corruptions
    assert bench.main(["--checkpoint", str(run), "--data", str(data), "--measures", "10", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    assert [" ".join(r.split()[:2]) for r in rows] == ["network alone", "10 measurements,"]
    with pytest.raises(SystemExit):
        bench.main(["--checkpoint", str(run), "--data", str(data), "--measures", "14"])
    assert bench.main(["--checkpoint", str(tmp_path / "none"), "--data", str(data)]) == 2
    assert bench.main(["--checkpoint", str(run), "--data", str(tmp_path / "no-cells")]) == 2
