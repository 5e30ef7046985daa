import numpy as np
import pytest

from ml.classification.robustness import CORRUPTIONS, corrupt, robustness_table


@pytest.fixture
def crops():
    rng = np.random.default_rng(0)
    dark = rng.integers(20, 90, (6, 32, 32, 3))
    light = rng.integers(150, 230, (6, 32, 32, 3))
    return np.concatenate([dark, light]).astype(np.uint8), np.array([0] * 6 + [1] * 6)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_keeps_the_crop_shape_and_changes_it(name, crops):
    x, _ = crops
    for severity in range(3):
        out = corrupt(x, name, severity)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert (out != x).any(), f"{name} at severity {severity + 1} changed nothing"
    assert (corrupt(x, name, 2) == corrupt(x, name, 2)).all()  # the same corruption for every model


def test_table_measures_what_a_corruption_does_to_a_model(crops):
    x, y = crops

    def by_brightness(c):  # a "model" that reads only the mean brightness
        return (c.reshape(len(c), -1).mean(1) > 128).astype(int)

    table = robustness_table(by_brightness, x, y)
    assert table["clean"] == 1.0
    assert set(table) == {"clean", *CORRUPTIONS} and all(len(v) == 3 for k, v in table.items() if k != "clean")
    assert table["brightness"][2] < 1.0  # +80 grey levels lifts the dark crops over the line
    assert table["field_edge"] == [1.0, 1.0, 1.0]  # a cut margin keeps the mean brightness


def test_the_evaluate_command_adds_the_table_and_its_plot(saved_classifier, small_cells, tmp_path, capsys):
    """``evaluate --robustness`` corrupts the crops before the model's stain normalization and scores them."""
    import json

    from PIL import Image

    from ml.classification.__main__ import main

    cells, _ = small_cells
    data = tmp_path / "data"
    for i in range(0, len(cells), 9):  # five cells of each class
        (data / cells.classes[cells.labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(cells.images[i]).save(data / cells.classes[cells.labels[i]] / f"{i}.png")
    assert main(["evaluate", "--checkpoint", str(saved_classifier), "--data", str(data), "--json", "--robustness",
                 "--plots", str(tmp_path / "plots")]) == 0
    r = json.loads(capsys.readouterr().out)
    table = r["robustness"]
    assert set(table) == {"clean", *CORRUPTIONS} and all(0 <= a <= 1 for k, v in table.items() if k != "clean" for a in v)
    assert table["clean"] == pytest.approx(r["accuracy"])  # the same cells, as the model serves them
    assert (tmp_path / "plots" / "robustness.png").stat().st_size > 5_000
    assert str(tmp_path / "plots" / "robustness.png") in r["figures"]
