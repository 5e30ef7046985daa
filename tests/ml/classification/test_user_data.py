"""A user's own cell folders and runs: what a lab's files look like is read right, and what cannot be
used is refused with a message naming it, never a traceback, a NaN or a silently wrong score."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from ml.classification.__main__ import main
from ml.classification.data import (BOX_FILE, decode_threads, fixed_split, kfold_splits, load_folder, load_tecom,
                                    synthetic_cells)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))


def _folder(root, per_class: dict[str, int]):
    """Class folders of generated cell images (PNG, 112 px)."""
    cells = synthetic_cells(n_per_class=max(per_class.values()), classes=list(per_class), seed=3)
    for i, name in enumerate(cells.names):
        cls = name.split("/")[0]
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.iterdir())) < per_class[cls]:
            cv2.imwrite(str(folder / f"{name.split('/')[1]}.png"), cells.images[i][..., ::-1])
    return root


def _train(tmp_path, data, *extra):
    return main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--backbone", "cbam_cnn_small",
                 "--epochs", "1", "--img-size", "32", *extra])


def test_a_set_too_small_to_hold_out_cells_still_trains_and_says_so(tmp_path, capsys):
    data = _folder(tmp_path / "data", {"lymphocyte": 2, "neutrophil": 2})
    assert _train(tmp_path, data) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["test_accuracy"] is None and "too small to hold out test images" in out.err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data), "--split", "val"]) == 2
    assert "its 'val' part is empty" in capsys.readouterr().err


def test_the_split_a_run_was_trained_on_is_the_one_it_is_scored_on(tmp_path, capsys):
    from ml.classification import load_classifier

    data = _folder(tmp_path / "data", {"lymphocyte": 12, "neutrophil": 12})
    assert _train(tmp_path, data, "--split-seed", "3") == 0
    capsys.readouterr()
    assert load_classifier(tmp_path / "run").metrics["split_seed"] == 3
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data), "--split", "test", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    cells = load_folder(data)
    test = {cells.names[i] for i in fixed_split(cells.names, cells.labels, seed=3)[2]}
    assert scored["n"] == len(test) and test != {cells.names[i] for i in fixed_split(cells.names, cells.labels)[2]}
    kept = load_classifier(tmp_path / "run").metrics  # what the model registry shows of the run
    assert kept["test"]["n"] == len(test) and kept["test"]["accuracy"] == pytest.approx(scored["accuracy"])
    assert set(kept["test"]["f1"]) == {"lymphocyte", "neutrophil"} and kept["robustness_n"] == len(test)
    assert all((tmp_path / "run" / name).is_file() for name in ("confusion.png", "curves.png", "robustness.png"))


def test_cross_validation_scores_each_fold_with_a_model_chosen_on_other_cells():
    cells = synthetic_cells(n_per_class=20, classes=["a", "b", "c"])
    folds = kfold_splits(cells.names, cells.labels, 4)
    seen = []
    for tr, va, te in folds:
        assert len(va) and not (set(va) & set(te)) and not (set(tr) & set(te)) and not (set(tr) & set(va))
        assert len(tr) + len(va) + len(te) == len(cells)
        seen += list(te)
    assert sorted(seen) == list(range(len(cells)))


def test_the_cache_follows_the_class_folders(tmp_path):
    data = _folder(tmp_path / "data", {"lymph": 3, "neutrophil": 3})
    assert load_folder(data).classes == ["lymph", "neutrophil"]
    (data / "lymph").rename(data / "lymphocyte")
    assert load_folder(data).classes == ["lymphocyte", "neutrophil"]
    moved = sorted((data / "lymphocyte").iterdir())[0]
    moved.rename(data / "neutrophil" / moved.name)
    cells = load_folder(data)
    assert cells.classes[cells.labels[cells.names.index(f"neutrophil/{moved.name}")]] == "neutrophil"


def test_decoding_on_several_threads_gives_what_one_thread_gives(tmp_path, monkeypatch):
    """Every image is decoded, its cell found and cropped the same way whatever the threads, in the
    folder's order (PBC's own images where they are, generated ones otherwise), unreadable ones left out."""
    from tests.helpers import DATASETS

    pbc = DATASETS / "pbc"
    if pbc.is_dir():
        data = tmp_path / "data"
        for cls in ("eosinophil", "monocyte", "neutrophil"):
            (data / cls).mkdir(parents=True)
            for src in sorted((pbc / cls).glob("*.jpg"))[:8]:
                (data / cls / src.name).write_bytes(src.read_bytes())
    else:
        data = _folder(tmp_path / "data", {"eosinophil": 8, "monocyte": 8, "neutrophil": 8})
    (data / "monocyte" / "broken.png").write_bytes(b"\x89PNG not really")
    loaded = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("LEUKOLAB_DECODE_THREADS", threads)
        assert decode_threads() == int(threads)
        loaded[threads] = load_folder(data, use_cache=False)
    one, three = loaded["1"], loaded["3"]
    assert len(one) >= 20 and one.names == three.names and one.classes == three.classes
    assert np.array_equal(one.labels, three.labels)
    assert np.array_equal(one.images, three.images) and np.array_equal(one.boxes, three.boxes)


def test_folders_without_images_and_unreadable_images_are_left_out_with_a_warning(tmp_path, caplog, capsys):
    data = _folder(tmp_path / "data", {"lymphocyte": 3, "neutrophil": 3})
    (data / "empty").mkdir()
    (data / "__MACOSX" / "lymphocyte").mkdir(parents=True)
    (data / "__MACOSX" / "lymphocyte" / "._x.png").write_bytes(b"junk")
    (data / "neutrophil" / "more").mkdir()
    cv2.imwrite(str(data / "neutrophil" / "more" / "x.png"), np.full((20, 20, 3), 200, np.uint8))
    (data / "monocyte").mkdir()
    (data / "monocyte" / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING):
        cells = load_folder(data)
    assert cells.classes == ["lymphocyte", "neutrophil"] and len(cells) == 6
    text = caplog.text
    assert "empty holds no images" in text and "broken.png" in text and "no readable image in monocyte" in text
    assert "images in its sub-folders (more) are not read" in text
    single = _folder(tmp_path / "single", {"neutrophil": 6})
    assert _train(tmp_path, single) == 2
    assert "needs images of at least two classes" in capsys.readouterr().err


def test_a_box_file_from_a_spreadsheet_is_read_and_its_mistakes_are_named(tmp_path, caplog):
    data = _folder(tmp_path / "data", {"lymphocyte": 2, "neutrophil": 2})
    first = sorted((data / "lymphocyte").iterdir())[0].name
    (data / BOX_FILE).write_bytes(f"\ufeffimage,x0,y0,x1,y1\nlymphocyte/{first},30,30,80,80\nlymphocyte\\nothing.png,1,1,5,5\n"
                                  .encode("utf-8"))
    with caplog.at_level(logging.WARNING):
        cells = load_folder(data)
    assert len(cells) == 4 and "1 of its 2 boxes name no image" in caplog.text
    (data / BOX_FILE).write_text(f"image,x0,y0,x1,y1\nlymphocyte/{first},5000,5000,5100,5100\n")
    with pytest.raises(ValueError, match=f"the box of lymphocyte/{first} .* lies outside that 112x112 image"):
        load_folder(data)
    (data / BOX_FILE).write_text(f"image,x0,y0,x1,y1\nlymphocyte/{first},1,1,9,9\nlymphocyte/{first},2,2,9,9\n")
    with pytest.raises(ValueError, match=r"boxes.csv:3: .* has a box already \(line 2\)"):
        load_folder(data)
    (data / BOX_FILE).write_bytes(b"image,x0,y0,x1,y1\ncaf\xe9.png,1,1,9,9\n")
    with pytest.raises(ValueError, match="boxes.csv: not UTF-8 text"):
        load_folder(data)
    (data / BOX_FILE).write_text(f"image,x0,y0,x1,y1\nlymphocyte/{first},1,1,inf,9\n")
    with pytest.raises(ValueError, match="boxes.csv:2: expected image,x0,y0,x1,y1 with numbers"):
        load_folder(data)


@pytest.mark.parametrize("text, name, message", [
    ("epochs: [1\n", "cfg.yaml", "cfg.yaml: not valid YAML"),
    ("lr: fast\n", "cfg.yaml", "option lr must be float, got 'fast'"),
    ("augment_options: {stain_scal: 1}\n", "cfg.yaml", "unknown augment_options ['stain_scal']"),
    ("{epochs: 1}", "cfg.json", "cfg.json: not valid JSON"),
    ("epochs = 1", "cfg.toml", "cfg.toml: a config file is .yaml, .yml or .json"),
])
def test_config_files_that_cannot_be_used_are_named(tmp_path, capsys, text, name, message):
    data = _folder(tmp_path / "data", {"lymphocyte": 2, "neutrophil": 2})
    (tmp_path / name).write_text(text)
    assert _train(tmp_path, data, "--config", str(tmp_path / name)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [(["--batch", "0"], "option batch must be at least 1"),
                                            (["--margin", "-0.6"], "option margin must be between 0 and 2"),
                                            (["--folds", "1"], "--folds is 2 or more")])
def test_options_out_of_range_are_refused(tmp_path, capsys, extra, message):
    data = _folder(tmp_path / "data", {"lymphocyte": 2, "neutrophil": 2})
    assert _train(tmp_path, data, *extra) == 2
    assert message in capsys.readouterr().err


def test_a_run_folder_that_is_a_file_or_a_checkpoint_cut_short_is_named(tmp_path, capsys, saved_classifier):
    data = _folder(tmp_path / "data", {"lymphocyte": 2, "neutrophil": 2})
    (tmp_path / "run").write_text("a file")
    assert _train(tmp_path, data) == 2
    assert "run is a file" in capsys.readouterr().err
    cut = tmp_path / "cut"
    cut.mkdir()
    raw = (saved_classifier / "best.pt").read_bytes()
    (cut / "best.pt").write_bytes(raw[: len(raw) // 2])
    assert main(["evaluate", "--checkpoint", str(cut), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "best.pt: not a Leukolab classifier checkpoint" in err and "Traceback" not in err
    assert main(["evaluate", "--checkpoint", str(saved_classifier), "--data", str(data), "--threshold", "5"]) == 2
    assert "--threshold is a confidence between 0 and 1" in capsys.readouterr().err


def test_a_prior_names_classes_in_any_case():
    from ml.classification.priors import PERIPHERAL_BLOOD, prior_vector

    pi = prior_vector(["Basophil", "NEUTROPHIL"], PERIPHERAL_BLOOD)
    np.testing.assert_allclose(pi, np.array([0.01, 0.58]) / 0.59)


def test_heatmaps_of_images_of_one_name_do_not_overwrite_each_other(tmp_path, capsys, saved_classifier, smear):
    from ml.analyze import main as analyze

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "field.png"), smear[..., ::-1])
    assert analyze([str(tmp_path / "a" / "field.png"), str(tmp_path / "b" / "field.png"), "--classifier",
                    str(saved_classifier), "--heatmaps", str(tmp_path / "maps"), "--json"]) == 0
    images = json.loads(capsys.readouterr().out)["images"]
    paths = [c["heatmap"] for im in images for c in im["cells"]]
    assert len(paths) == len(set(paths)) >= 2 and all((tmp_path / "maps" / p.split("/")[-1]).is_file() for p in paths)


def test_a_second_labs_table_names_what_it_cannot_use(tmp_path):
    from ml.localization import formats
    from ml.localization.formats import Annotation
    from ml.boxes import Box

    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    cv2.imwrite(str(tmp_path / "JPEGImages" / "1.jpg"), np.full((60, 60, 3), 200, np.uint8))
    formats.write_voc(Annotation("1.jpg", 60, 60, [Box(10, 10, 40, 40)]), tmp_path / "Annotations" / "1.xml")
    (tmp_path / "labels.csv").write_text("image,category\n1,Neutrophil\n")
    assert load_tecom(tmp_path)[2] == ["neutrophil"]
    (tmp_path / "labels.csv").write_text("image,category\n1,platelet\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: category 'platelet' is none of basophil"):
        load_tecom(tmp_path)
    (tmp_path / "labels.csv").write_text("image,category\n2,neutrophil\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: 2 has no image in JPEGImages/"):
        load_tecom(tmp_path)


def test_a_split_seed_in_a_config_file_is_the_runs(tmp_path, capsys):
    from ml.classification import load_classifier

    data = _folder(tmp_path / "data", {"lymphocyte": 6, "neutrophil": 6})
    (tmp_path / "cfg.yaml").write_text("split_seed: 5\nlr: 3e-3\n")
    assert _train(tmp_path, data, "--config", str(tmp_path / "cfg.yaml")) == 2
    assert "YAML reads 3e-3 as text: write 0.003" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("split_seed: 5\n")
    assert _train(tmp_path, data, "--config", str(tmp_path / "cfg.yaml")) == 0
    assert load_classifier(tmp_path / "run").metrics["split_seed"] == 5


def test_an_unreadable_image_is_named_and_the_others_are_analyzed(tmp_path, capsys, saved_classifier, smear):
    from ml.analyze import main as analyze

    cv2.imwrite(str(tmp_path / "a.png"), smear[..., ::-1])
    cv2.imwrite(str(tmp_path / "c.png"), smear[..., ::-1])
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 3])  # cut short, as by an interrupted copy
    paths = [str(tmp_path / n) for n in ("a.png", "b.png", "c.png", "missing.png")]
    assert analyze([*paths, "--classifier", str(saved_classifier), "--json"]) == 1
    captured = capsys.readouterr()
    images = json.loads(captured.out)["images"]
    assert [im["path"] for im in images] == paths
    assert images[0]["cells"] and images[2]["cells"] == images[0]["cells"]  # the sample is the two readable ones
    assert "cells" not in images[1] and "b.png" in images[1]["error"] and "missing.png" in images[3]["error"]
    assert "b.png" in captured.err and "Traceback" not in captured.err
    # alone, the readable images give the same answers: the broken ones take no part in the sample
    assert analyze([paths[0], paths[2], "--classifier", str(saved_classifier), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == [images[0], images[2]]


def test_another_set_of_cells_joins_by_class_name_and_a_class_it_lacks_is_named():
    from ml.classification.data import synthetic_cells

    base = synthetic_cells(n_per_class=3, classes=["eosinophil", "lymphocyte", "neutrophil"])
    lab = synthetic_cells(n_per_class=2, classes=["neutrophil", "eosinophil"])  # other classes, other order
    joined = base.with_cells_of(lab)
    assert len(joined) == 9 + 4 and joined.classes == base.classes
    assert [joined.classes[k] for k in joined.labels[9:]] == [lab.classes[k] for k in lab.labels]
    assert joined.names[9:] == lab.names and np.array_equal(joined.images[9:], lab.images)
    with pytest.raises(ValueError, match="cells of monocyte: not a class of eosinophil, lymphocyte, neutrophil"):
        base.with_cells_of(synthetic_cells(n_per_class=1, classes=["monocyte", "neutrophil"]))


def test_the_default_recipe_trains_on_extra_cells_and_is_scored_on_its_own_data_alone(cell_folder, tmp_path):
    """A lab's reviewed cells join the training of the default recipe; validation and test stay the base
    data's, so that runs with and without them compare."""
    from PIL import Image

    from ml.classification import train_default
    from ml.classification.data import synthetic_cells

    lab = tmp_path / "lab"
    cells = synthetic_cells(n_per_class=5, seed=3, classes=["lymphocyte", "neutrophil"])
    for i, name in enumerate(cells.names):
        (lab / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cells.images[i]).save(lab / f"{name}.png")
    plain = json.loads((train_default(cell_folder, tmp_path / "plain", time_budget_s=12) / "metrics.json").read_text())
    joined = json.loads((train_default(cell_folder, tmp_path / "joined", time_budget_s=12, extra=[lab])
                         / "metrics.json").read_text())
    assert joined["n_train"] == plain["n_train"] + 10 and joined["extra_data"] == {lab.name: 10}
    assert joined["n_val"] == plain["n_val"] and joined["test"]["n"] == plain["test"]["n"]
