"""Classification metrics over plain arrays: accuracy, F1s, confusion, calibration, abstention."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    pred = cm.sum(0).astype(float)
    support = cm.sum(1).astype(float)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(int)


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro and weighted F1, per-class scores and the confusion matrix.

    Macro-F1 averages over classes that occur in ``y_true`` or ``y_pred``.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    p, r, f1, support = per_class(cm)
    present = (support > 0) | (cm.sum(0) > 0)
    n = max(1, len(y_true))
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).sum() / n),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / max(1, support.sum())),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
    }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def reliability(probs: np.ndarray, y_true, bins: int = 15) -> dict:
    """Per confidence bin: mean confidence, accuracy and count; and the expected calibration error."""
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = {"edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    ece = 0.0
    for b in range(bins):
        m = idx == b
        cnt = int(m.sum())
        out["count"].append(cnt)
        out["confidence"].append(float(conf[m].mean()) if cnt else 0.0)
        out["accuracy"].append(float(correct[m].mean()) if cnt else 0.0)
        if cnt:
            ece += cnt / len(conf) * abs(conf[m].mean() - correct[m].mean())
    out["ece"] = float(ece)
    return out


def ece(probs: np.ndarray, y_true, bins: int = 15) -> float:
    return reliability(probs, y_true, bins)["ece"]


def fit_temperature(logits: np.ndarray, y_true) -> float:
    """The temperature minimizing the negative log-likelihood (golden-section search on log T)."""
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y_true, int)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def abstention(probs: np.ndarray, y_true, threshold: float) -> dict:
    """Cells below ``threshold`` confidence go to "unidentified"; accuracy is on the rest."""
    conf = probs.max(1)
    keep = conf >= threshold
    y = np.asarray(y_true)
    acc = float((probs.argmax(1)[keep] == y[keep]).mean()) if keep.any() else 0.0
    return {"threshold": float(threshold), "unidentified_rate": float(1 - keep.mean()) if len(y) else 0.0,
            "accuracy_identified": acc}
