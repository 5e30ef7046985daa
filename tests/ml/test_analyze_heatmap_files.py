"""``python -m ml.analyze --heatmaps``: one file per cell, each listed only when written, a bad folder refused first."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ml.analyze import main

NAME_MAX = 255  # bytes in a file name on ext4, XFS, APFS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An untrained small classifier: heatmaps need one, not a good one."""
    import torch

    from ml.classification.artifact import save_checkpoint
    from ml.classification.crop import CropRule
    from ml.classification.registry import create_classifier

    torch.manual_seed(0)
    classes = ["basophil", "eosinophil", "lymphocyte"]
    run = tmp_path_factory.mktemp("classifier") / "run"
    save_checkpoint(run / "best.pt", create_classifier("cbam_cnn_small", len(classes)), architecture="cbam_cnn_small",
                    model_kwargs={}, classes=classes, crop=CropRule(0.2, 32))
    return run


def _save_field(path: Path, seed: int, n_wbc: int = 2) -> Path:
    from PIL import Image

    from ml.localization.synthetic import synthetic_field

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_field(seed=seed, n_wbc=n_wbc)[0]).save(path)
    return path


def _analyze(run_dir, images, heatmaps, capsys) -> list[dict]:
    argv = [*map(str, images), "--classifier", str(run_dir), "--json", "--heatmaps", str(heatmaps),
            "--norm", "off", "--adapt", "off"]  # each image's answers its own: comparable with a run of it alone
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["images"]


def test_distinct_stems_keep_their_plain_names():
    from ml.analyze import heatmap_names

    assert heatmap_names(["a", "b"], [2, 1]) == [["a_cell000.png", "a_cell001.png"], ["b_cell000.png"]]


def test_names_are_unique_whatever_the_stems():
    from ml.analyze import heatmap_names

    stems = ["base", "base", "000_base", "001_base", "000_base_2", "Base", "x_cell000", "x"]
    names = [n.lower() for image in heatmap_names(stems, [3] * len(stems)) for n in image]
    assert len(set(names)) == len(names)


def test_long_stems_are_cut_to_names_the_file_system_takes():
    from ml.analyze import heatmap_names

    stems = ["é" * 200, "é" * 200 + "x", "a" * 300]
    names = heatmap_names(stems, [1200, 2, 1])
    flat = [n for image in names for n in image]
    assert len(set(flat)) == len(flat)
    assert all(len(os.fsencode(n)) <= NAME_MAX for n in flat)
    assert names[0][1100].endswith("_cell1100.png") and names[2][0].startswith("a" * 200)


def test_an_image_named_like_anothers_renamed_copy_does_not_share_its_heatmap_files(run_dir, tmp_path, capsys):
    base = _save_field(tmp_path / "a" / "base.png", seed=3)
    other = _save_field(tmp_path / "b" / "000_base.png", seed=5)
    images = _analyze(run_dir, [base, base, other], tmp_path / "hm", capsys)
    listed = [c["heatmap"] for im in images for c in im["cells"]]
    assert len(listed) == 6 and len(set(listed)) == 6
    assert sorted(listed) == sorted(str(p) for p in (tmp_path / "hm").iterdir())
    # each cell names its own overlay: the file that a run of its image alone writes for it
    alone = _analyze(run_dir, [other], tmp_path / "alone", capsys)
    for mine, single in zip(images[2]["cells"], alone[0]["cells"]):
        assert Path(mine["heatmap"]).read_bytes() == Path(single["heatmap"]).read_bytes()
    assert Path(images[0]["cells"][0]["heatmap"]).read_bytes() != Path(images[2]["cells"][0]["heatmap"]).read_bytes()


def test_an_image_with_a_long_name_gets_its_heatmaps_written(run_dir, tmp_path, capsys):
    path = _save_field(tmp_path / ("f" * 250 + ".png"), seed=3, n_wbc=1)
    (cell,) = _analyze(run_dir, [path], tmp_path / "hm", capsys)[0]["cells"]
    assert Path(cell["heatmap"]).is_file() and len(Path(cell["heatmap"]).name) <= NAME_MAX


def test_a_heatmap_that_cannot_be_written_is_an_error_naming_it(run_dir, tmp_path, capsys):
    path = _save_field(tmp_path / "field.png", seed=3, n_wbc=1)
    (tmp_path / "hm" / "field_cell000.png").mkdir(parents=True)  # the file's name taken by a folder
    assert main([str(path), "--classifier", str(run_dir), "--json", "--heatmaps", str(tmp_path / "hm")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "field_cell000.png" in err and len(err.splitlines()) == 1


def test_save_png_raises_instead_of_returning_quietly(tmp_path):
    from ml.classification.heatmaps import save_png

    target = tmp_path / "missing" / "x.png"
    with pytest.raises(OSError, match="x.png"):
        save_png(target, np.zeros((8, 8, 3), np.uint8))
    save_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")


def test_heatmaps_naming_a_file_is_refused_before_any_work(run_dir, tmp_path, capsys, monkeypatch):
    import ml.localization

    def no_work(*args, **kwargs):
        raise AssertionError("the localizer was loaded before --heatmaps was checked")

    monkeypatch.setattr(ml.localization, "load_localizer", no_work)
    path = _save_field(tmp_path / "field.png", seed=3, n_wbc=1)
    (tmp_path / "hm").write_text("not a folder")
    assert main([str(path), "--classifier", str(run_dir), "--json", "--heatmaps", str(tmp_path / "hm")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --heatmaps {tmp_path / 'hm'}: ") and len(err.splitlines()) == 1
