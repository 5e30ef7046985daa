"""Speed on a GPU, beside the CPU of the same machine: classifier training (mixed precision,
channels-last, augmentation on the free cores) and inference, and deep-detector inference.

    python bench/gpu.py --data ../shared/datasets/pbc [--per-class 200] [--epochs 4]
                        [--detector runs/bench/deep]

The classifier trains with the packaged most-accurate recipe (configs/accurate.yaml, without its
moving average of the weights, which needs more steps than a few epochs) for ``--epochs`` epochs on the first ``--per-class`` images of each class (the fixed split of those);
the table gives training images/s, held-out accuracy scored on the GPU and on the CPU (they must
agree), and inference cells/s with 1 and 8 test-time views. With ``--detector RUN`` it also times
the deep detector per field on both devices. Writes ``--out``/gpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cells_per_s(clf, crops, views: int, repeats: int = 3) -> float:
    import torch

    clf.tta = views
    clf.logits_of_crops(crops[:256])  # warm-up (kernels, allocator)
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        clf.logits_of_crops(crops)
    return repeats * len(crops) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="class-per-folder cells (PBC)")
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--detector", type=Path, help="a deep-detector run to time on both devices")
    p.add_argument("--fields", type=Path, help="VOC folder of fields to time the detector on (default BCCD test split)")
    p.add_argument("--cpu-threads", type=int, default=2)
    p.add_argument("--device", default="cuda", help="the accelerator to compare with the CPU (default cuda)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench-gpu")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import yaml

    from ml.classification import load_classifier
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import evaluate_cells
    from ml.classification.train import TrainConfig, fit

    from ml.device import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.cpu_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "ml/classification/configs/accurate.yaml").read_text())
    # the moving average of the weights would still hold mostly its random start after a few epochs
    spec.update(epochs=args.epochs, time_budget_s=None, device=str(device), ema=0.0)
    cfg = TrainConfig(**{**spec, "split_seed": spec.get("seed", 0)})  # this bench's split follows the seed
    cells = load_folder(args.data, per_class=args.per_class, size=cache_size_for(cfg.img_size, cfg.margin))
    tr, va, te = fixed_split(cells.names, cells.labels, seed=cfg.split_seed)
    t0 = time.time()
    run = fit(cfg, cells.subset(tr), cells.subset(va), args.out / "classifier")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = {"device": name, "n_train": len(tr), "epochs": args.epochs,
            "train_s": round(time.time() - t0, 1)}
    save = lambda: (args.out / "gpu.json").write_text(json.dumps(rows, indent=2))  # noqa: E731 (after each stage)
    gpu, cpu = load_classifier(run, device=device), load_classifier(run, device="cpu")
    rows["train_images_per_s"] = gpu.metrics["train_images_per_s"]
    test = cells.subset(te)
    for name, clf in (("gpu", gpu), ("cpu", cpu)):
        r = evaluate_cells(clf, test)
        rows[f"test_accuracy_{name}"] = r["accuracy"]
    save()
    crops = np.concatenate([gpu.crops(img, [b]) for img, b in
                            ((test.images[i], test.box(i)) for i in range(len(test)))])
    crops = np.concatenate([crops] * max(1, 4096 // len(crops)))
    for views in (1, 8):
        rows[f"cells_per_s_gpu_tta{views}"] = round(cells_per_s(gpu, crops, views))
        rows[f"cells_per_s_cpu{args.cpu_threads}_tta{views}"] = round(cells_per_s(cpu, crops[:512], views, 1))
        save()
    if args.detector:
        from ml.imageio import load_image
        from ml.localization.data import load_split
        from ml.localization.deep import DeepLocalizer

        fields = load_split(args.fields, "all") if args.fields else load_split(part="test")
        images = [load_image(s.image_path) for s in fields]
        for name in (str(device), "cpu"):
            loc = DeepLocalizer(args.detector, device=name)
            loc.detect(images[0])
            times = []
            for img in images:
                t = time.perf_counter()
                loc.detect(img)
                times.append(1000 * (time.perf_counter() - t))
            rows[f"detector_ms_per_field_{'gpu' if name != 'cpu' else 'cpu'}"] = round(float(np.median(times)), 2)
    save()
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
