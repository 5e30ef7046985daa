"""Compare training recipes side by side on the benchmark's fixed PBC split, with tecom as the check.

    # on a machine with the data: one recipe per --recipe (JSON of TrainConfig fields), run in parallel
    python bench/recipes.py --data ../shared/datasets/pbc --out runs/recipes \\
        --recipe '{"name": "80px", "backbone": "cbam_cnn", "img_size": 80, "epochs": 70}' \\
        --recipe '{"name": "64px", "backbone": "cbam_cnn", "img_size": 64, "epochs": 90}'
    # for a machine without it (a lent GPU): export the localizer's cell crops once (JPEG, ~35 MB),
    # carry the file and the tecom folder, and point --cells at it there
    python bench/recipes.py --data ../shared/datasets/pbc --export-cells cells.npz --cache-size 144
    python bench/recipes.py --cells cells.npz --tecom tecom --recipe ...

Each recipe trains in its own process (``--workers`` augmentation threads each; on a GPU the model
waits for augmentation, so spread the cores over the recipes). Prints one JSON line per recipe:
PBC held-out test accuracy, macro-F1 and ECE, epochs run, and tecom accuracy / macro-F1 (expert
boxes as trained; expert boxes with the blood prior; as ``ml.analyze`` answers, with the argmax over
tecom's five classes and over all the model's classes). Tecom is for validation only: never choose
a recipe by it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification.data import CACHE_SIZE, CellSet, cache_size_for, datasets_root, load_folder  # noqa: E402


def export_cells(cells: CellSet, path: Path, quality: int = 95) -> None:
    import cv2

    bufs = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1].ravel() for im in cells.images]
    offsets = np.cumsum([0] + [len(b) for b in bufs])
    np.savez(path, jpeg=np.concatenate(bufs), offsets=offsets, boxes=cells.boxes, labels=cells.labels,
             classes=np.array(cells.classes), names=np.array(cells.names))


def import_cells(path: Path, size: int) -> CellSet:
    """Cells of an export, resized to context crops of ``size`` pixels."""
    import cv2

    z = np.load(path)
    off, jpeg = z["offsets"], z["jpeg"]
    imgs = [cv2.imdecode(jpeg[off[i]:off[i + 1]], cv2.IMREAD_COLOR)[..., ::-1] for i in range(len(off) - 1)]
    s = size / imgs[0].shape[0]
    if s != 1:
        imgs = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR) for im in imgs]
    return CellSet(np.ascontiguousarray(np.stack(imgs)), z["boxes"].astype(np.float32) * s, z["labels"],
                   [str(c) for c in z["classes"]], [str(n) for n in z["names"]])


def run_one(args, spec: dict) -> dict:
    import torch

    from ml.classification import load_classifier
    from ml.classification.data import fixed_split
    from ml.classification.evaluate import evaluate_cells, evaluate_tecom, evaluate_tecom_as_analyzed
    from ml.classification.train import TrainConfig, fit

    torch.set_num_threads(1)
    name = spec.pop("name")
    cfg = TrainConfig(**{"backbone": "cbam_cnn", "stain_norm": "background", "workers": args.workers, **spec,
                         "split_seed": args.split_seed})
    size = cache_size_for(cfg.img_size, cfg.margin)
    cells = import_cells(args.cells, size) if args.cells else load_folder(args.data, size=size)
    tr, va, te = fixed_split(cells.names, cells.labels, seed=args.split_seed)  # the same split for every seed
    t = time.time()
    run = fit(cfg, cells.subset(tr), cells.subset(va), args.out / name)
    r = evaluate_cells(load_classifier(run), cells.subset(te))
    log = json.loads((run / "log.json").read_text())
    res = {"name": name, "recipe": spec, "train_s": round(time.time() - t), "epochs": len(log),
           "test_accuracy": round(r["accuracy"], 4), "test_macro_f1": round(r["macro_f1"], 4),
           "ece": round(r["ece"], 4), "per_class_f1": {k: round(v["f1"], 3) for k, v in r["per_class"].items()}}
    if args.tecom and Path(args.tecom).is_dir():
        for label, prior, boxes in (("tecom_expert", None, "expert"), ("tecom_expert_blood", "blood", "expert"),
                                    ("tecom_analyze", "blood", "localizer")):
            clf = load_classifier(run, prior=prior)
            tr_ = (evaluate_tecom_as_analyzed(clf, args.tecom) if label == "tecom_analyze"
                   else evaluate_tecom(clf, args.tecom, boxes=boxes))
            res[label] = [round(tr_["accuracy"], 3), round(tr_["macro_f1"], 3)]
            if boxes == "localizer":  # ml.analyze may answer any of the model's classes
                res["tecom_analyze_any_class"] = [round(tr_["any_class"]["accuracy"], 3),
                                                  round(tr_["any_class"]["macro_f1"], 3)]
    (args.out / f"{name}.json").write_text(json.dumps({**res, "confusion_matrix": r["confusion_matrix"]}, indent=1))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=datasets_root() / "pbc")
    p.add_argument("--cells", type=Path, help="an --export-cells file to read instead of --data")
    p.add_argument("--tecom", type=Path, default=datasets_root() / "tecom")
    p.add_argument("--recipe", action="append", default=[], help="JSON of TrainConfig fields plus a name")
    p.add_argument("--workers", type=int, default=1, help="augmentation threads per recipe")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the fixed split (a recipe's seed changes training only)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-recipes"))
    p.add_argument("--export-cells", type=Path, help="write the data's cell crops to this file and stop")
    p.add_argument("--cache-size", type=int, default=CACHE_SIZE, help="context-crop side of the export")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run this recipe
    args = p.parse_args(argv)
    if args.export_cells:
        export_cells(load_folder(args.data, size=args.cache_size), args.export_cells)
        print(f"wrote {args.export_cells}")
        return 0
    if not args.cells and not args.data.is_dir():
        print(f"error: no data at {args.data} (give --data or --cells)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args, json.loads(args.one))), flush=True)
        return 0
    specs = [json.loads(r) for r in args.recipe]
    if not specs or any("name" not in s for s in specs):
        print("error: give at least one --recipe, each with a \"name\"", file=sys.stderr)
        return 2
    base = [sys.executable, __file__, "--out", str(args.out), "--workers", str(args.workers),
            "--split-seed", str(args.split_seed),
            "--tecom", str(args.tecom or "")]
    base += ["--cells", str(args.cells)] if args.cells else ["--data", str(args.data)]
    procs = [subprocess.Popen(base + ["--one", json.dumps(s)], stdout=subprocess.PIPE, text=True) for s in specs]
    failed = 0
    for s, proc in zip(specs, procs):
        out, _ = proc.communicate()
        failed += proc.returncode != 0
        print(out.strip() or json.dumps({"name": s["name"], "error": f"exit code {proc.returncode}"}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
