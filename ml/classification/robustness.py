"""Accuracy under image corruptions at three severities each (applied to the crop the model sees)."""
from __future__ import annotations

import cv2
import numpy as np

from ml.classification.transforms import hed_jitter


def _gauss(c, s, rng):
    return np.clip(c + rng.normal(0, (8, 16, 28)[s], c.shape), 0, 255)


def _salt_pepper(c, s, rng):
    out = c.copy()
    m = rng.random(c.shape[:2])
    p = (0.01, 0.03, 0.08)[s]
    out[m < p / 2] = 0
    out[m > 1 - p / 2] = 255
    return out


def _speckle(c, s, rng):
    return np.clip(c * (1 + rng.normal(0, (0.1, 0.2, 0.35)[s], c.shape)), 0, 255)


def _blur(c, s, rng):
    return cv2.GaussianBlur(c, (0, 0), (0.7, 1.2, 2.0)[s])


def _jpeg(c, s, rng):
    _, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, (40, 20, 8)[s]])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _brightness(c, s, rng):
    return np.clip(c.astype(np.float32) + (30, 55, 80)[s], 0, 255)


def _contrast(c, s, rng):
    f = c.astype(np.float32)
    return np.clip((f - f.mean()) * (0.7, 0.5, 0.3)[s] + f.mean(), 0, 255)


def _stain(c, s, rng):
    # A fixed (not random) stain shift per severity so every model sees the same corruption.
    return hed_jitter(c, np.random.default_rng(1234 + s), (0.05, 0.10, 0.18)[s])


def _colour_cast(c, s, rng):
    # A warm cast (halogen lamp, camera white balance, yellowish stain base), fixed per severity.
    gain = np.array([(1.0, 0.96, 0.85), (1.0, 0.92, 0.72), (1.0, 0.88, 0.6)][s], dtype=np.float32)
    return np.clip(c.astype(np.float32) * gain, 0, 255)


def field_edge(crop: np.ndarray, sides: tuple[int, ...], depth: float) -> np.ndarray:
    """The crop as if the field ended ``depth`` (a fraction of the side) inside it on each of
    ``sides`` (0 left, 1 top, 2 right, 3 bottom): the pixels beyond repeat the last row or column
    kept, which is what the crop rule does at a field's edge."""
    out = crop.copy()
    h, w = out.shape[:2]
    for side in sides:
        d = min(int(round(depth * (h if side in (1, 3) else w))), (h if side in (1, 3) else w) - 1)
        if d <= 0:
            continue
        if side == 0:
            out[:, :d] = out[:, d:d + 1]
        elif side == 2:
            out[:, w - d:] = out[:, w - d - 1:w - d]
        elif side == 1:
            out[:d] = out[d:d + 1]
        else:
            out[h - d:] = out[h - d - 1:h - d]
    return out


def _field_edge(c, s, rng):
    # A cell at the field's edge: the field ends half-way into the crop's margin (1), at the
    # cell's box (2, the rule's margin 0.2 puts the box edge 1/7 of the side in), or at the box on
    # two adjacent sides, a corner (3); the side drawn per cell.
    first = int(rng.integers(4))
    sides = (first,) if s < 2 else (first, (first + 1) % 4)
    return field_edge(c, sides, (1 / 14, 1 / 7, 1 / 7)[s])


CORRUPTIONS = {"gaussian_noise": _gauss, "salt_pepper": _salt_pepper, "speckle": _speckle, "blur": _blur,
               "jpeg": _jpeg, "brightness": _brightness, "contrast": _contrast, "stain_shift": _stain,
               "colour_cast": _colour_cast, "field_edge": _field_edge}


def corrupt(crops: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fn = CORRUPTIONS[name]
    return np.stack([np.asarray(fn(c, severity, rng)).astype(np.uint8) for c in crops])


def robustness_table(predict, crops: np.ndarray, y: np.ndarray) -> dict:
    """``{corruption: [acc@1, acc@2, acc@3]}`` plus ``clean``; ``predict(crops) -> labels``."""
    table = {"clean": float((predict(crops) == y).mean())}
    for name in CORRUPTIONS:
        table[name] = [float((predict(corrupt(crops, name, s)) == y).mean()) for s in range(3)]
    return table


def format_table(table: dict) -> str:
    lines = [f"{'corruption':<16} {'sev1':>6} {'sev2':>6} {'sev3':>6}", f"{'clean':<16} {table['clean']:>6.3f}"]
    for k, v in table.items():
        if k != "clean":
            lines.append(f"{k:<16} " + " ".join(f"{a:>6.3f}" for a in v))
    return "\n".join(lines)


def plot_table(table: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k, v in table.items():
        if k != "clean":
            ax.plot([1, 2, 3], v, marker="o", label=k)
    ax.axhline(table["clean"], color="k", ls="--", label="clean")
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
