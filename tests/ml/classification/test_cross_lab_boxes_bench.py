"""bench/cross_lab_boxes.py end to end on a generated second lab, and its errors."""
import pytest

from tests.helpers import load_bench

bench = load_bench("cross_lab_boxes")


def test_each_source_and_scale_is_scored_for_each_classifier(saved_classifier, second_lab, capsys, torch_threads):
    args = ["--checkpoint", str(saved_classifier), str(saved_classifier), "--data", str(second_lab),
            "--sources", "expert", "classical", "--scales", "0.9", "1.2", "--threads", "1"]
    assert bench.main(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in ("expert", "classical")]
    assert [(r[0], r[2]) for r in rows] == [("expert", "0.90"), ("expert", "1.20"), ("classical", "0.90"),
                                           ("classical", "1.20")]
    for r in rows:
        scores = [float(v) for v in r[3:] if v != "/"]
        assert len(scores) == 4 and all(0.0 <= v <= 1.0 for v in scores)
        assert scores[:2] == scores[2:]  # the same classifier twice scores the same
    assert float(rows[0][1]) == 1.0 and 0.0 <= float(rows[2][1]) <= 1.0  # IoU with the folder's own boxes


def test_bad_input_gives_exit_code_2(saved_classifier, second_lab, tmp_path, capsys):
    assert bench.main(["--checkpoint", str(saved_classifier), "--data", str(tmp_path)]) == 2
    assert "tecom-style" in capsys.readouterr().err
    assert bench.main(["--checkpoint", str(tmp_path / "none"), "--data", str(second_lab)]) == 2
    assert bench.main(["--checkpoint", str(saved_classifier), "--data", str(second_lab),
                       "--sources", str(tmp_path / "no-run")]) == 2
    assert "unknown localizer" in capsys.readouterr().err


def test_held_out_cells_are_scored_at_the_same_scales(saved_classifier, second_lab, tmp_path, capsys,
                                                     torch_threads):
    from ml.classification.data import PBC_CLASSES, synthetic_cells
    from tests.helpers import write_class_folders

    cells = tmp_path / "cells"
    write_class_folders(synthetic_cells(n_per_class=10, seed=2, classes=PBC_CLASSES), cells)
    args = ["--checkpoint", str(saved_classifier), "--data", str(second_lab), "--sources", "expert",
            "--scales", "1", "1.5", "--cells", str(cells), "--threads", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("held-out cells")]
    assert [r[2] for r in rows] == ["1.00", "1.50"] and "(16 cells)" in out
    assert all(0.0 <= float(r[3]) <= 1.0 and 0.0 <= float(r[5]) <= 1.0 for r in rows)
    assert bench.main([*args[:-4], "--cells", str(tmp_path / "none")]) == 2


def test_an_average_over_one_framing_reproduces_the_rows_at_scale_one(saved_classifier, second_lab, tmp_path,
                                                                      capsys, torch_threads):
    from ml.classification.data import PBC_CLASSES, synthetic_cells
    from tests.helpers import write_class_folders

    cells = tmp_path / "cells"
    write_class_folders(synthetic_cells(n_per_class=10, seed=2, classes=PBC_CLASSES), cells)
    common = ["--checkpoint", str(saved_classifier), "--data", str(second_lab), "--sources", "classical",
              "--cells", str(cells), "--threads", "1"]
    assert bench.main([*common, "--scales", "1", "--average-scales", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    at_one = next(line.split() for line in out if line.startswith("classical"))
    held_out = next(line.split() for line in out if line.startswith("held-out cells"))
    averaged = next(line.split() for line in out if "tecom" in line and "held-out" in line)
    assert averaged[2:5] == at_one[3:6]  # the folder's cells: accuracy / macro-F1
    assert averaged[6:9] == held_out[3:6]  # the held-out cells
    assert bench.main([*common, "--scales", "1", "--average-scales", "0.9", "1", "1.1"]) == 0
    averaged3 = next(line.split() for line in capsys.readouterr().out.splitlines() if "held-out" in line and "tecom" in line)
    assert all(0.0 <= float(v) <= 1.0 for v in (averaged3[2], averaged3[4], averaged3[6], averaged3[8]))
    with pytest.raises(SystemExit):
        bench.main([*common, "--average-scales", "0"])
