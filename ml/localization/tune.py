"""Fitting the classical localizer to annotated fields: box calibration and a parameter search.

``fit_calibration`` learns the linear map from the segmented nucleus/cell box to the annotated
box (where annotators put the edge). ``tune_classical`` searches the segmentation parameters at
random around the current ones, fitting the calibration for each, and keeps the best by
``mean_iou + recall50 + precision50`` on the given (training) fields.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from ml.boxes import Box
from ml.localization.classical import CHANNELS, ClassicalConfig, ClassicalLocalizer
from ml.localization.metrics import detection_metrics


def _pairs(loc: ClassicalLocalizer, cands: Sequence, gts: Sequence[Sequence[Box]], sizes):
    """(candidate box in original pixels, ground-truth box) for GT boxes not cut by the image edge."""
    s = loc.config.work_scale
    out = []
    for cs, g, (w, h) in zip(cands, gts, sizes):
        for gt in g:
            if gt.x0 <= 1 or gt.y0 <= 1 or gt.x1 >= w - 1 or gt.y1 >= h - 1:
                continue
            inside = [c for c in cs if gt.x0 <= (c.cell[0] + c.cell[2]) / 2 / s <= gt.x1
                      and gt.y0 <= (c.cell[1] + c.cell[3]) / 2 / s <= gt.y1]
            if inside:
                c = max(inside, key=lambda c: c.area)
                out.append(([v / s for v in c.cell], gt.as_list()))
    return out


def fit_calibration(loc: ClassicalLocalizer, cands, gts, sizes) -> ClassicalConfig:
    """Least-squares ``size_gt = scale * size + offset`` per axis; returns the updated config."""
    pairs = _pairs(loc, cands, gts, sizes)
    if len(pairs) < 3:
        return loc.config
    c = np.array([p[0] for p in pairs])
    g = np.array([p[1] for p in pairs])
    scale, offset = [], []
    for ax in (0, 1):
        x = c[:, ax + 2] - c[:, ax]
        y = g[:, ax + 2] - g[:, ax]
        a, b = np.polyfit(x, y, 1)
        scale.append(float(a))
        offset.append(float(b))
    return replace(loc.config, box_scale=scale, box_offset=offset)


def evaluate_config(cfg: ClassicalConfig, images: Sequence[np.ndarray], gts, *, fit: bool = True,
                    ) -> tuple[ClassicalConfig, dict]:
    loc = ClassicalLocalizer(cfg)
    thr = [loc.threshold_for(im) for im in images]
    cands = [loc.candidates(im, t) for im, t in zip(images, thr)]
    sizes = [(im.shape[1], im.shape[0]) for im in images]
    if fit:
        cfg = fit_calibration(loc, cands, gts, sizes)
        loc = ClassicalLocalizer(cfg)
    preds = [[loc.calibrate(c).clip(w, h) for c in cs] for cs, (w, h) in zip(cands, sizes)]
    # operating point: the score threshold with the best recall+precision
    best = None
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        m = detection_metrics(gts, preds, score_threshold=t)
        key = m["recall50"] + m["precision50"] + m["mean_iou"]
        if best is None or key > best[0] + 1e-9:
            best = (key, t, m)
    cfg = replace(cfg, score_threshold=best[1])
    return cfg, best[2]


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
            open_radius=pick("open_radius", [0, 1, 2], base.open_radius),
            group_radius=pick("group_radius", [3, 5, 7, 9, 12], base.group_radius),
            min_area=pick("min_area", [100, 150, 250, 400, 600], base.min_area),
            split_area=pick("split_area", [4000, 6000, 9000, 1e9], base.split_area),
            use_cytoplasm=pick("use_cytoplasm", [False, True], base.use_cytoplasm),
            cytoplasm_radius=pick("cytoplasm_radius", [10, 20, 30, 40], base.cytoplasm_radius),
            score_area=pick("score_area", [500, 1000, 1500, 2500], base.score_area),
        )
        cfg, m = evaluate_config(cand, images, gts)
        history.append({"trial": trial, **asdict(cfg), **m})
        if _objective(m) > _objective(best_m):
            best_cfg, best_m = cfg, m
            if progress:
                tqdm.write(f"trial {trial}: mean_iou {m['mean_iou']:.3f} recall50 {m['recall50']:.3f} "
                           f"precision50 {m['precision50']:.3f}")
    return best_cfg, best_m, history
