"""Fitting the classical localizer to annotated fields: box calibration and a parameter search.

``fit_calibration`` learns the linear map from the segmented nucleus/cell box to the annotated
box (where annotators put the edge). ``tune_classical`` searches the segmentation parameters at
random around the current ones, fitting the calibration for each, and keeps the best by
``mean_iou + recall50 + precision50`` on the given (training) fields. The search keeps a
threshold floor, so that fields without a white cell still work (BCCD alone would not punish
its absence).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from ml.boxes import Box
from ml.localization.classical import CHANNELS, ClassicalConfig, ClassicalLocalizer, cytoplasm_calibration
from ml.localization.metrics import detection_metrics


def fit_calibration(loc: ClassicalLocalizer, cands, gts, sizes) -> ClassicalConfig:
    """Least-squares fit of the cell box size (and a centre offset) from the candidate features.

    Each ground-truth WBC not cut by the image edge is paired with the largest candidate whose
    nucleus centre lies inside it. Returns the config with the fitted calibration.
    """
    feats, targets_w, targets_h, dxs, dys = [], [], [], [], []
    for cs, g, (w, h) in zip(cands, gts, sizes):
        for gt in g:
            if gt.x0 <= 1 or gt.y0 <= 1 or gt.x1 >= w - 1 or gt.y1 >= h - 1:
                continue
            inside = []
            for c in cs:
                f, cx, cy = loc.box_features(c)
                if gt.x0 <= cx <= gt.x1 and gt.y0 <= cy <= gt.y1:
                    inside.append((c.area, f, cx, cy))
            if inside:
                _, f, cx, cy = max(inside, key=lambda t: t[0])
                feats.append(f)
                targets_w.append(gt.width)
                targets_h.append(gt.height)
                dxs.append((gt.x0 + gt.x1) / 2 - cx)
                dys.append((gt.y0 + gt.y1) / 2 - cy)
    if len(feats) < 3:  # too few cells to fit: keep the calibration, or the rays' box plus 30 px where it does not fit
        n = loc.config.n_features
        if len(loc.config.box_coef_w) == n and len(loc.config.box_coef_h) == n:
            return loc.config
        w, h = cytoplasm_calibration(n)
        return replace(loc.config, box_coef_w=w, box_coef_h=h)
    X = np.array(feats)
    if len(feats) < 30:  # too few cells for every coefficient: size from the cytoplasm box alone
        keep = np.zeros(X.shape[1])
        keep[[2, 3, -1]] = 1
        X = X * keep
    ridge = 1e-3 * np.eye(X.shape[1])  # the nucleus and cytoplasm features are collinear without cytoplasm
    coef_w = np.linalg.solve(X.T @ X + ridge, X.T @ np.array(targets_w))
    coef_h = np.linalg.solve(X.T @ X + ridge, X.T @ np.array(targets_h))
    return replace(loc.config, box_coef_w=[float(v) for v in coef_w], box_coef_h=[float(v) for v in coef_h],
                   centre_offset=[float(np.median(dxs)), float(np.median(dys))])


def evaluate_config(cfg: ClassicalConfig, images: Sequence[np.ndarray], gts, *, fit: bool = True,
                    ) -> tuple[ClassicalConfig, dict]:
    loc = ClassicalLocalizer(cfg)
    gains = [loc.gains_for(im) for im in images]
    thr = [loc.threshold_for(im, g) for im, g in zip(images, gains)]
    cands = [loc.candidates(im, t, g) for im, t, g in zip(images, thr, gains)]
    sizes = [(im.shape[1], im.shape[0]) for im in images]
    if fit:
        cfg = fit_calibration(loc, cands, gts, sizes)
        loc = ClassicalLocalizer(cfg)
    preds = [loc.boxes_from(cs, w, h) for cs, (w, h) in zip(cands, sizes)]
    # the score only ranks (for AP); filtering is left to min_area, which does not overfit as easily
    return cfg, detection_metrics(gts, preds, score_threshold=cfg.score_threshold)


def cross_validate_calibration(cfg: ClassicalConfig, images: Sequence[np.ndarray], gts, *, folds: int = 5,
                               ) -> dict:
    """How the classical method does on fields its box calibration was not fitted on.

    Field ``i`` belongs to fold ``i % folds`` (on BCCD's sorted annotation files with 5 folds, fold 4
    is the fixed test split); each fold is scored with the calibration refitted on the other folds'
    fields, the segmentation parameters of ``cfg`` kept as they are. Returns the folds' metrics and
    the pooled mean IoU and recall at IoU 0.5 over every white cell of every fold.
    """
    if folds < 2 or folds > len(images):
        raise ValueError(f"cross-validation needs 2 to {len(images)} folds, got {folds}")
    per_fold, ious, recalled, n = [], 0.0, 0.0, 0
    for k in range(folds):
        fit_on = [i for i in range(len(images)) if i % folds != k]
        held = [i for i in range(len(images)) if i % folds == k]
        fitted, _ = evaluate_config(cfg, [images[i] for i in fit_on], [gts[i] for i in fit_on])
        _, m = evaluate_config(fitted, [images[i] for i in held], [gts[i] for i in held], fit=False)
        per_fold.append(m)
        if m["n_gt"]:
            ious += m["mean_iou"] * m["n_gt"]
            recalled += m["recall50"] * m["n_gt"]
            n += m["n_gt"]
    return {"folds": per_fold, "mean_iou": ious / n if n else float("nan"),
            "recall50": recalled / n if n else float("nan"), "n_gt": n}


def _objective(m: dict) -> float:
    return m["mean_iou"] + m["recall50"] + m["precision50"]


def tune_classical(images: Sequence[np.ndarray], gts, *, start: ClassicalConfig | None = None,
                   trials: int = 60, seed: int = 0, progress: bool = True) -> tuple[ClassicalConfig, dict, list]:
    """Random search (half global, half around the best so far); returns best config, its metrics, history."""
    from tqdm import tqdm

    rng = random.Random(seed)
    best_cfg, best_m = evaluate_config(start or ClassicalConfig(), images, gts)
    history = [{"trial": 0, **{k: v for k, v in asdict(best_cfg).items()}, **best_m}]
    for trial in tqdm(range(1, trials + 1), desc="tune", disable=not progress):
        local = rng.random() < 0.5
        base = best_cfg

        def pick(name, choices, cur):
            return rng.choice(choices) if not local or rng.random() < 0.3 else cur

        cand = replace(
            base,
            channel=pick("channel", CHANNELS[:2], base.channel) if not local else base.channel,
            blur=pick("blur", [1, 3, 5, 7], base.blur),
            threshold_offset=pick("threshold_offset", [-10, -6, -3, 0, 3, 6, 10], base.threshold_offset),
            threshold_floor=pick("threshold_floor", [130.0, 134.0, 138.0, 142.0], base.threshold_floor),
            open_radius=pick("open_radius", [0, 1, 2], base.open_radius),
            group_radius=pick("group_radius", [3, 5, 7, 9, 12], base.group_radius),
            min_area=pick("min_area", [150, 250, 400, 600], base.min_area),
            split_area=pick("split_area", [4000, 6000, 9000, 1e9], base.split_area),
            split_peak=pick("split_peak", [0.4, 0.5, 0.6], base.split_peak),
            nms_iou=pick("nms_iou", [0.2, 0.3, 0.5, 1.0], base.nms_iou),
            use_cytoplasm=pick("use_cytoplasm", [False, True], base.use_cytoplasm),
            cytoplasm_radius=pick("cytoplasm_radius", [10, 15, 20, 30], base.cytoplasm_radius),
            cytoplasm_contrast=pick("cytoplasm_contrast", [4, 7, 10, 14, 18], base.cytoplasm_contrast),
            cytoplasm_clip=pick("cytoplasm_clip", [1.1, 1.25, 1.4, 1.7], base.cytoplasm_clip),
            grabcut=pick("grabcut", [False, True], base.grabcut),
        )
        cfg, m = evaluate_config(cand, images, gts)
        history.append({"trial": trial, **asdict(cfg), **m})
        if _objective(m) > _objective(best_m):
            best_cfg, best_m = cfg, m
            if progress:
                tqdm.write(f"trial {trial}: mean_iou {m['mean_iou']:.3f} recall50 {m['recall50']:.3f} "
                           f"precision50 {m['precision50']:.3f}")
    return best_cfg, best_m, history
