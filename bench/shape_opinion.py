"""The nucleus-shape opinion of a trained classifier, refitted with more measurements or weighed otherwise.

    python bench/shape_opinion.py --checkpoint runs/default --data ../shared/datasets/pbc \
        [--tecom ../shared/datasets/tecom] [--measures 6 10 13] [--weight-under-shift]

The network of ``--checkpoint`` (its own shape opinion, if any, set aside) is given opinions fitted as
``train --shape-opinion`` fits one (trees on the training cells of the benchmark's fixed split, weight
0.125/0.25/0.5 by clean validation accuracy, temperature refitted), reading the first ``--measures``
of: the six of ``ml.classification.morphometry`` (the nucleus's outline), then four more of its layout
(elongation, offset from the cell's centre, deepest fold over the square root of its area, the cell's
share of the disc), then three of optical density (nucleus over cytoplasm, the cytoplasm's and the
chromatin's texture). ``--weight-under-shift`` also weighs each opinion by the mean of the clean
validation accuracy and the validation accuracy under the 30 corruptions of
``ml.classification.robustness`` (candidates up to 2). One line per way: its weight, the held-out PBC
test accuracy and ECE, the mean test accuracy under the 30 corruptions, and, with ``--tecom``, tecom as
``ml.analyze`` answers (localizer boxes, blood prior, the sample's statistics).

The seven further measurements live here, not in the product: measured in the thirteenth session, none
was adopted (ml/classification/README.md, "More measurements for the shape opinion").
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification import morphometry as M  # noqa: E402

EXTRA = ("nucleus_elongation", "nucleus_offset", "nucleus_fold", "cell_disc_fraction",
         "nucleus_cytoplasm_density", "cytoplasm_texture", "chromatin_texture")
SHIFT_WEIGHTS = (0.125, 0.25, 0.5, 1.0, 2.0)


def extra_measures(crops: np.ndarray, margin: float) -> np.ndarray:
    """``N x 7`` further measurements (:data:`EXTRA`) of crops cut with ``margin``, on the nucleus
    segmented as :func:`ml.classification.morphometry.nucleus_features` segments it; zeros where
    there is no nucleus to measure."""
    s = M.MEASURE_SIZE
    out = np.zeros((len(crops), len(EXTRA)), np.float32)
    for i, crop in enumerate(crops):
        region = cv2.resize(np.ascontiguousarray(M.box_region(crop, margin)), (s, s), interpolation=cv2.INTER_LINEAR)
        b = M._white_balanced(region[None])[0]
        green = M._OD[b[..., 1]]
        density = M._OD[b[..., 0]] + green + M._OD[b[..., 2]]
        top, low = green[M._DISC].max(), green[M._DISC].min()
        if top - low < 0.05:
            continue
        level = np.clip(green / top * 255, 0, 255).astype(np.uint8)
        t, _ = cv2.threshold(level[M._DISC], 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        nucleus = cv2.morphologyEx(((level > t) & M._DISC).astype(np.uint8), cv2.MORPH_OPEN, M._OPEN)
        m = cv2.moments(nucleus, True)
        if m["m00"] < 5:
            continue
        cell = (density > 0.25) & M._DISC
        cytoplasm, inside = cell & (nucleus == 0), nucleus.astype(bool)
        mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
        d = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11 ** 2)
        major, minor = (mu20 + mu02) / 2 + d, (mu20 + mu02) / 2 - d
        cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
        contours, _ = cv2.findContours(nucleus, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        largest = max(contours, key=cv2.contourArea)
        fold = 0.0
        if len(largest) > 3:
            try:
                defects = cv2.convexityDefects(largest, cv2.convexHull(largest, returnPoints=False))
                fold = 0.0 if defects is None else float(defects.reshape(-1, 4)[:, 3].max()) / 256.0
            except cv2.error:
                pass
        has_cytoplasm = cytoplasm.sum() > 5
        cyto_mean = density[cytoplasm].mean() if has_cytoplasm else 1.0
        out[i] = [np.sqrt(max(minor, 1e-6) / max(major, 1e-6)),
                  np.hypot(cx - s / 2 + 0.5, cy - s / 2 + 0.5) / (s * M.DISC_RADIUS),
                  fold / np.sqrt(m["m00"]),
                  cell.sum() / M._DISC_AREA,
                  density[inside].mean() / max(cyto_mean, 1e-3) if has_cytoplasm else 0.0,
                  density[cytoplasm].std() / max(cyto_mean, 1e-3) if has_cytoplasm else 0.0,
                  green[inside].std() / max(green[inside].mean(), 1e-3)]
    return out


def measures(crops: np.ndarray, margin: float) -> np.ndarray:
    """The six measurements of the product and the seven of :func:`extra_measures`, side by side."""
    return np.hstack([M.features_of_crops(crops, margin), extra_measures(crops, margin)])


def main(argv: list[str] | None = None) -> int:
    import torch

    from ml.classification import load_classifier
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import evaluate_tecom_as_analyzed, labelled_crops, report_from_logits
    from ml.classification.metrics import fit_temperature
    from ml.classification.robustness import CORRUPTIONS, corrupt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="classifier run directory or checkpoint")
    ap.add_argument("--data", type=Path, required=True, help="the class-per-folder data it was trained on (PBC)")
    ap.add_argument("--tecom", type=Path, help="tecom: report it as ml.analyze answers (validation only)")
    ap.add_argument("--measures", type=int, nargs="+", default=[6, 10, 13], help="how many measurements each opinion reads")
    ap.add_argument("--weight-under-shift", action="store_true", help="also weigh each opinion under the corruptions")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if any(not len(M.FEATURES) <= k <= len(M.FEATURES) + len(EXTRA) for k in args.measures):
        ap.error(f"--measures must be between {len(M.FEATURES)} and {len(M.FEATURES) + len(EXTRA)}")
    torch.set_num_threads(args.threads)
    try:
        clf = load_classifier(args.checkpoint, device="cpu")
        rule = clf.crop_rule
        cells = load_folder(args.data, size=cache_size_for(rule.out_size, rule.margin))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    network = copy.copy(clf)
    if clf.shape_opinion is not None:  # the network alone, at its own temperature
        network.shape_opinion, network.temperature = None, clf.shape_opinion.network_temperature
    tr, va, te = fixed_split(cells.names, cells.labels)
    (trc, try_), (vac, vay), (tec, tey) = (labelled_crops(network, cells.subset(i)) for i in (tr, va, te))
    print("measuring the cells ...", file=sys.stderr, flush=True)
    trf, vaf, tef = measures(trc, rule.margin), measures(vac, rule.margin), measures(tec, rule.margin)
    val_logits, test_logits = network.network_logits(vac), network.network_logits(tec)
    shifted = []  # (logits, measures) of the test cells, and with --weight-under-shift of the validation cells, under each corruption
    print("corrupting the cells ...", file=sys.stderr, flush=True)
    for name in CORRUPTIONS:
        for sev in range(3):
            t = corrupt(tec, name, sev)
            v = corrupt(vac, name, sev) if args.weight_under_shift else vac[:0]
            shifted.append((network.network_logits(v), measures(v, rule.margin),
                            network.network_logits(t), measures(t, rule.margin)))

    class Served(type(network)):
        """The network with an opinion that reads the first ``k`` of :func:`measures` (for tecom)."""

        def logits_of_crops(self, crops):
            logits = self.network_logits(crops)
            return logits if self.opinion is None else self.opinion.scores(logits, measures(crops, rule.margin)[:, :self.k])

    def line(label: str, opinion, k: int = 0) -> None:
        score = (lambda lg, f: lg) if opinion is None else (lambda lg, f: opinion.scores(lg, f[:, :k]))
        fused_val = score(val_logits, vaf)
        temperature = network.temperature if opinion is None else fit_temperature(fused_val, vay)
        r = report_from_logits(score(test_logits, tef), tey, clf.classes, temperature, None)
        corr = np.mean([(score(lg, f).argmax(1) == tey).mean() for _, _, lg, f in shifted])
        text = f"{label:<34} {r['accuracy']:>8.3f} {r['ece']:>6.3f} {corr:>11.3f}"
        if args.tecom:
            served = copy.copy(network)
            served.__class__ = Served
            served.opinion, served.k, served.temperature = opinion, k, temperature
            t = evaluate_tecom_as_analyzed(served, args.tecom)
            text += f"   {t['accuracy']:.3f} / {t['macro_f1']:.3f}"
        print(text, flush=True)

    print(f"{'opinion (measurements, weight)':<34} {'PBC acc':>8} {'ECE':>6} {'corruptions':>11}"
          + ("   tecom as ml.analyze" if args.tecom else ""))
    line("network alone", None)
    for k in args.measures:
        opinion = M.ShapeOpinion.fit(trf[:, :k], try_, len(clf.classes))
        opinion, _, _ = opinion.weighed(val_logits, vaf[:, :k], vay, network.temperature)
        line(f"{k} measurements, weight {opinion.weight:g}", opinion, k)
        if args.weight_under_shift:
            def criterion(w):
                clean = (opinion.scores(val_logits, vaf[:, :k], w).argmax(1) == vay).mean()
                return (clean + np.mean([(opinion.scores(lg, f[:, :k], w).argmax(1) == vay).mean()
                                         for lg, f, _, _ in shifted])) / 2
            scores = {w: criterion(w) for w in SHIFT_WEIGHTS}
            best = max(scores.values())
            shifted_opinion = copy.copy(opinion)
            shifted_opinion.weight = min(w for w, v in scores.items() if v == best)
            line(f"{k} measurements, weight {shifted_opinion.weight:g} (shift)", shifted_opinion, k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
