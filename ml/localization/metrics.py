"""Localization metrics: mean IoU of ground-truth cells, precision/recall at IoU 0.5, COCO-style AP.

All functions take, per image, a list of ground-truth boxes and a list of predicted boxes
(:class:`ml.boxes.Box`, with scores) of one label. Ground-truth boxes marked ``difficult`` are left out
as in the Pascal VOC protocol: they are not cells to find (nor in the mean IoU), and a prediction
that matches none of the other cells but one of them is ignored rather than counted as false.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.boxes import Box

COCO_IOUS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """``len(a) x len(b)`` matrix of IoU."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    A = np.array([x.as_list() for x in a])
    B = np.array([x.as_list() for x in b])
    ix = np.clip(np.minimum(A[:, None, 2], B[None, :, 2]) - np.maximum(A[:, None, 0], B[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(A[:, None, 3], B[None, :, 3]) - np.maximum(A[:, None, 1], B[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (A[:, 2] - A[:, 0]) * (A[:, 3] - A[:, 1])
    area_b = (B[:, 2] - B[:, 0]) * (B[:, 3] - B[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _counted(g: Sequence[Box]) -> list[Box]:
    """The ground-truth boxes that count (all but the ``difficult`` ones)."""
    return [b for b in g if not b.difficult]


def best_ious(gts: Sequence[Sequence[Box]], preds: Sequence[Sequence[Box]]) -> np.ndarray:
    """For every ground-truth box (but the difficult ones), the IoU of its best-overlapping prediction
    (0 when none)."""
    out = []
    for g, p in zip(gts, preds):
        g = _counted(g)
        m = iou_matrix(g, p)
        out.extend(m.max(axis=1) if m.shape[1] else np.zeros(len(g)))
    return np.asarray(out, dtype=np.float64)


def _greedy_match(g: Sequence[Box], p: Sequence[Box], thr: float) -> np.ndarray:
    """For predictions sorted by score (descending), whether each one is a true positive at IoU ``thr``
    (1), a false one (0) or ignored (-1: it matches no counted cell but a difficult one)."""
    ignored = [b for b in g if b.difficult]
    g = _counted(g)
    m = iou_matrix(g, p)
    used = np.zeros(len(g), bool)
    tp = np.zeros(len(p), bool)
    for j in range(len(p)):
        if not len(g):
            break
        ious = np.where(used, -1.0, m[:, j])
        i = int(np.argmax(ious))
        if ious[i] >= thr:
            used[i] = True
            tp[j] = True
    out = tp.astype(np.int8)
    if ignored and len(p):
        near_ignored = iou_matrix(ignored, p).max(axis=0) >= thr
        out[~tp & near_ignored] = -1
    return out


def _match_counts(gts, preds, thr: float) -> tuple[int, int, int]:
    """True positives, scored predictions (those matching only a difficult box left out) and counted
    ground-truth boxes at IoU ``thr``, with greedy one-to-one matching by score."""
    matches = [_greedy_match(g, sorted(p, key=lambda b: -b.score), thr) for g, p in zip(gts, preds)]
    tp = sum(int((m == 1).sum()) for m in matches)
    return tp, sum(int((m >= 0).sum()) for m in matches), sum(len(_counted(g)) for g in gts)


def _precision_recall(tp: int, n_pred: int, n_gt: int) -> tuple[float, float]:
    precision = tp / n_pred if n_pred else (1.0 if n_gt == 0 else 0.0)
    recall = tp / n_gt if n_gt else 1.0
    return precision, recall


def precision_recall(gts, preds, thr: float = 0.5) -> tuple[float, float]:
    """Precision and recall at IoU ``thr`` with greedy one-to-one matching by score."""
    return _precision_recall(*_match_counts(gts, preds, thr))


def pr_curve(gts, preds, thr: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score arrays over all predictions ranked by score (pooled over images)."""
    scores, tps = [], []
    for g, p in zip(gts, preds):
        p = sorted(p, key=lambda b: -b.score)
        match = _greedy_match(g, p, thr)
        tps.append(match[match >= 0])
        scores.extend(b.score for b, k in zip(p, match) if k >= 0)
    n_gt = sum(len(_counted(g)) for g in gts)
    if not scores:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    scores = np.asarray(scores)
    tp = np.concatenate(tps)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    return ctp / np.maximum(ctp + cfp, 1e-12), ctp / max(n_gt, 1), scores[order]


def average_precision(gts, preds, thr: float = 0.5) -> float:
    """COCO-style AP at one IoU threshold: 101-point interpolated precision envelope."""
    n_gt = sum(len(_counted(g)) for g in gts)
    if n_gt == 0:
        return float("nan")
    precision, recall, _ = pr_curve(gts, preds, thr)
    return _interpolated_ap(precision, recall)


_RECALL_POINTS = np.linspace(0, 1, 101)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """The 101-point interpolated precision envelope of a ranking's precision and recall."""
    if not len(precision):
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    inside = idx < len(envelope)
    return float(envelope[idx[inside]].sum() / len(_RECALL_POINTS))


def omitted_cells_ceiling(n_boxed: int, n_omitted: int, *, target: float | None = None,
                          max_orderings: int = 200_000, seed: int = 0) -> dict[str, float]:
    """AP of a perfect detector on fields where ``n_omitted`` real cells have no box.

    The detector finds every cell (the ``n_boxed`` boxed ones and the ``n_omitted`` the annotators
    left out) at IoU above the threshold and ranks each above every false detection; it cannot tell
    an omitted cell from a boxed one, so the omitted ones fall at random among the boxed ones. Each
    omitted cell then counts as a false positive ranked among the true ones. Returns the mean AP
    over those orderings (every ordering when there are at most ``max_orderings``, otherwise that
    many drawn with ``seed``), its lowest value, and with ``target`` the share of orderings
    reaching it.
    """
    from itertools import combinations
    from math import comb

    if n_boxed < 1 or n_omitted < 0:
        raise ValueError("omitted_cells_ceiling needs n_boxed >= 1 and n_omitted >= 0")
    n = n_boxed + n_omitted
    if comb(n, n_omitted) <= max_orderings:
        placements = combinations(range(n), n_omitted)
    else:
        rng = np.random.default_rng(seed)
        placements = (rng.choice(n, n_omitted, replace=False) for _ in range(max_orderings))
    aps = []
    for fp_at in placements:
        tp = np.ones(n)
        tp[list(fp_at)] = 0.0
        ctp = np.cumsum(tp)
        aps.append(_interpolated_ap(ctp / np.arange(1, n + 1), ctp / n_boxed))
    aps = np.asarray(aps)
    out = {"mean_ap": float(aps.mean()), "min_ap": float(aps.min()), "orderings": int(len(aps))}
    if target is not None:
        out["share_reaching_target"] = float((aps >= target - 1e-12).mean())
    return out


def detection_metrics(gts, preds, *, score_threshold: float = 0.0) -> dict[str, float]:
    """The benchmark's numbers for one label.

    ``preds`` should hold low-score detections too (for AP); mean IoU, precision and recall use
    only those scoring at least ``score_threshold`` (the localizer's operating point).
    """
    kept = [[b for b in p if b.score >= score_threshold] for p in preds]
    ious = best_ious(gts, kept)
    tp, n_pred, n_gt = _match_counts(gts, kept, 0.5)
    precision, recall = _precision_recall(tp, n_pred, n_gt)
    ap = [average_precision(gts, preds, t) for t in COCO_IOUS]
    return {
        "mean_iou": float(ious.mean()) if len(ious) else float("nan"),
        "recall50": recall,
        "precision50": precision,
        "ap50": ap[0],
        "ap75": ap[5],
        "ap50_95": float(np.mean(ap)),
        "n_gt": n_gt,
        "n_pred": n_pred,  # the predictions scored (those matching only a difficult box left out)
    }
