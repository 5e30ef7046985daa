"""Evaluating a localizer on annotated fields and writing the run directory's metrics and plots."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ml.boxes import Box
from ml.jsonio import dumps
from ml.imageio import read_image
from ml.localization.formats import Sample
from ml.localization.metrics import best_ious, detection_metrics, pr_curve

LABEL_COLOURS = {"WBC": (0, 200, 0), "RBC": (220, 40, 40), "Platelets": (40, 40, 230)}


def evaluate_localizer(localizer, samples: Sequence[Sample], *, label: str = "WBC",
                       progress: bool = False) -> tuple[dict, list[list[Box]]]:
    """Run ``localizer`` on every sample; metrics for ``label`` plus timing.

    Detections are requested down to a score of 0.01 (for AP); mean IoU, precision and recall use
    the localizer's own operating threshold.
    """
    from tqdm import tqdm

    preds, seconds = [], []
    op = float(getattr(localizer, "score_threshold", None) or getattr(getattr(localizer, "config", None),
                                                                       "score_threshold", 0.0) or 0.0)
    if samples:  # warm-up (first-call allocations), not timed
        localizer.detect(read_image(samples[0].image_path), labels=None)
    for s in tqdm(samples, desc="evaluate", disable=not progress):
        img = read_image(s.image_path)
        t0 = time.perf_counter()
        boxes = localizer.detect(img, min_score=min(0.01, op), labels=None)
        seconds.append(time.perf_counter() - t0)
        preds.append(boxes)
    gts = [s.annotation.of_label(label) for s in samples]
    metrics = detection_metrics(gts, [[b for b in p if b.label == label] for p in preds], score_threshold=op)
    metrics.update({
        "label": label,
        "n_images": len(samples),
        "ms_per_image": 1000.0 * float(np.median(seconds)) if seconds else float("nan"),
        "ms_per_image_mean": 1000.0 * float(np.mean(seconds)) if seconds else float("nan"),
        "score_threshold": op,
    })
    for other in ("RBC", "Platelets"):
        if other != label and any(b.label == other for p in preds for b in p):
            og = [s.annotation.of_label(other) for s in samples]
            om = detection_metrics(og, [[b for b in p if b.label == other] for p in preds], score_threshold=op)
            metrics[f"{other}_ap50"] = om["ap50"]
            metrics[f"{other}_recall50"] = om["recall50"]
    return metrics, preds


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], *, gts: Sequence[Box] = (), min_score: float = 0.0,
               ) -> np.ndarray:
    """A copy of ``image`` with ground truth (white, thin) and predictions (by label) drawn in."""
    import cv2

    out = image.copy()
    for g in gts:
        cv2.rectangle(out, (int(g.x0), int(g.y0)), (int(g.x1) - 1, int(g.y1) - 1), (255, 255, 255), 1)
    for b in boxes:
        if b.score < min_score:
            continue
        c = LABEL_COLOURS.get(b.label, (255, 160, 0))
        cv2.rectangle(out, (int(b.x0), int(b.y0)), (int(b.x1) - 1, int(b.y1) - 1), c, 2 if b.label == "WBC" else 1)
        if b.label == "WBC":
            cv2.putText(out, f"{b.score:.2f}", (int(b.x0) + 3, int(b.y0) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1)
    return out


# the figures a run keeps beside its model (the model registry shows them): training's loss and
# what write_report draws of an evaluation written into the run folder
RUN_FIGURES = {"pr_curve.png": "Precision and recall", "iou_hist.png": "IoU of each cell with its box",
               "loss.png": "Training loss"}


def score_localizer(localizer, samples: Sequence[Sample], out_dir: str | Path, *, scored_on: str) -> dict:
    """The localizer's scores on annotated ``samples`` (:func:`evaluate_localizer`), ``split`` saying what
    they were (``scored_on``), written with their plots into ``out_dir`` (:func:`write_report`)."""
    metrics, boxes = evaluate_localizer(localizer, samples)
    metrics["split"] = scored_on
    write_report(out_dir, metrics, samples, boxes)
    return metrics


def write_report(out_dir: str | Path, metrics: dict, samples: Sequence[Sample], preds: Sequence[Sequence[Box]],
                 *, label: str = "WBC", n_examples: int = 4, prefix: str = "") -> None:
    """``metrics.json``, ``pr_curve.png``, ``iou_hist.png`` and ``examples.jpg`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{prefix}metrics.json").write_text(dumps(metrics, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    gts = [s.annotation.of_label(label) for s in samples]
    lp = [[b for b in p if b.label == label] for p in preds]
    op = metrics.get("score_threshold", 0.0)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    for thr in (0.5, 0.75):
        p, r, _ = pr_curve(gts, lp, thr)
        ax.plot(r, p, label=f"IoU {thr}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title(f"{label}: AP50 {metrics['ap50']:.3f}, AP50:95 {metrics['ap50_95']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{prefix}pr_curve.png", dpi=100)
    plt.close(fig)
    ious = best_ious(gts, [[b for b in p if b.score >= op] for p in lp])
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    ax.hist(ious, bins=np.linspace(0, 1, 21), color="tab:green")
    ax.axvline(float(np.mean(ious)) if len(ious) else 0, color="k", ls="--", label=f"mean {np.mean(ious):.3f}")
    ax.set_xlabel("IoU of each ground-truth cell with its best prediction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{prefix}iou_hist.png", dpi=100)
    plt.close(fig)
    # examples: the worst and the best fields by IoU
    per_image = [float(best_ious([g], [[b for b in p if b.score >= op]]).mean())
                 if any(not b.difficult for b in g) else 1.0
                 for g, p in zip(gts, lp)]
    order = np.argsort(per_image)
    pick = list(order[: n_examples // 2]) + list(order[::-1][: n_examples - n_examples // 2])
    tiles = []
    import cv2

    for i in pick:
        img = draw_boxes(read_image(samples[i].image_path), preds[i], gts=gts[i], min_score=op)
        tiles.append(cv2.resize(img, (480, 360)))
    if tiles:
        while len(tiles) % 2:
            tiles.append(np.zeros_like(tiles[0]))
        grid = np.vstack([np.hstack(tiles[k:k + 2]) for k in range(0, len(tiles), 2)])
        cv2.imwrite(str(out / f"{prefix}examples.jpg"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
