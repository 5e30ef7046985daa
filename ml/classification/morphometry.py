"""A second opinion from the nucleus's shape, measured the same way in any lab.

Another lab's stain, camera and optics change a cell's colours and textures, which a network trained
on one lab leans on; the shape of the nucleus (its share of the cell, how lobed, how convex) is what a
haematologist reads among the first, and it changes least. Six measurements of the nucleus, segmented by
Otsu's threshold on green optical density (Romanowsky-stained nuclei absorb green strongly),
feed a gradient-boosted tree model (scikit-learn) fitted on the training cells. Its log-probabilities
are added to the network's, with a weight chosen on the validation cells, and the sum is calibrated
again:

    score = log softmax(logits / T_network) + weight * log p_shape,   probabilities = softmax(score / T)

The measurements come from the crop the network sees (the crop rule's box region, white-balanced
on its own brightest pixels and resized to ``MEASURE_SIZE``), so the opinion needs nothing the
network does not get. The fitted trees travel inside the classifier's checkpoint, serialized with
skops (no pickle: the checkpoint stays loadable with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from ml.colour import BACKGROUND_LEVEL, BACKGROUND_QUANTILE, MAX_GAIN

FEATURES = ("nucleus_disc_fraction", "nucleus_cell_fraction", "nucleus_solidity", "nucleus_roughness",
            "nucleus_pieces", "nucleus_lobes")
MEASURE_SIZE = 96  # side of the box region the nucleus is measured on
DISC_RADIUS = 0.48  # the measured disc's radius, a fraction of that side
WEIGHTS = (0.125, 0.25, 0.5)  # candidate weights of the opinion; chosen on validation cells
TREES = dict(max_iter=200, learning_rate=0.05)
FLAT_CELLS = 24  # up to this many cells, the trees are walked as flat arrays (faster than scikit-learn's per-call cost)

_yy, _xx = np.mgrid[:MEASURE_SIZE, :MEASURE_SIZE]
_DISC = np.hypot(_xx - MEASURE_SIZE / 2 + 0.5, _yy - MEASURE_SIZE / 2 + 0.5) < MEASURE_SIZE * DISC_RADIUS
_DISC_AREA = int(_DISC.sum())
_INSIDE = np.where(_DISC, 255, 0).astype(np.uint8)  # masks that keep a uint8 image's disc in min / max
_OUTSIDE = 255 - _INSIDE
_OD = (-np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)  # optical density per level
_LEVELS = np.arange(256, dtype=np.float32)
_OPEN = np.ones((3, 3), np.uint8)
_ERODE = np.ones((5, 5), np.uint8)


def box_region(crop: np.ndarray, margin: float) -> np.ndarray:
    """The part of a crop (cut by the crop rule with ``margin``) that is the cell's box."""
    size = crop.shape[0]
    side = size / (1 + 2 * margin)
    a, b = int(round((size - side) / 2)), int(round((size + side) / 2))
    return crop[a:b, a:b]


def nucleus_features(region: np.ndarray) -> np.ndarray:
    """The six measurements (:data:`FEATURES`) of the nucleus in a cell's box region (``HxWx3`` uint8 RGB).

    The region is resized to ``MEASURE_SIZE``, white-balanced, and the nucleus taken as the pixels of
    the inscribed disc whose green optical density is above Otsu's threshold (opened 3x3). Fractions
    are of the disc and of the cell (the disc's pixels with total optical density above 0.25);
    solidity is the nucleus's area over its convex hull's; roughness its perimeter squared over
    4 pi its area (1 for a disc); pieces the parts above 8 % of its area; lobes the parts above
    5 % that survive a 5x5 erosion (a segmented neutrophil's lobes come apart).
    """
    return _measure([region])[0]


def features_of_crops(crops: np.ndarray, margin: float, chunk: int = 64) -> np.ndarray:
    """``N x 6`` measurements (:func:`nucleus_features`) of crops as the classifier sees them (cut
    with ``margin``), ``chunk`` cells at a time: 0.57 ms a cell on one core of a slow two-core
    machine, where measuring them one at a time took 0.84 ms."""
    if not len(crops):
        return np.zeros((0, len(FEATURES)), np.float32)
    return np.concatenate([_measure([box_region(c, margin) for c in crops[i:i + chunk]])
                           for i in range(0, len(crops), chunk)])


def _white_balanced(regions: np.ndarray) -> np.ndarray:
    """:func:`ml.colour.white_balance` of each of ``N x S x S x 3`` uint8 regions, with the same
    numbers: the brightest pixels' channel sums are sums of integers below 2**24 (regions of up
    to 256x256 pixels), exact in any order, and each gain is applied through a table of its 256
    float32 results."""
    n = len(regions)
    pixels = regions.reshape(n, -1, 3)
    grey = (pixels[..., 0].astype(np.uint16) + pixels[..., 1] + pixels[..., 2]).astype(np.float32) / 3
    bright = (grey >= np.quantile(grey, BACKGROUND_QUANTILE, axis=1)[:, None]).astype(np.float32)
    total = np.matmul(bright[:, None, :], pixels.astype(np.float32))[:, 0]  # N x 3, exact
    background = total / bright.sum(axis=1)[:, None]
    gains = np.clip(BACKGROUND_LEVEL / np.maximum(background, 1.0), 1.0 / MAX_GAIN, MAX_GAIN).astype(np.float32)
    tables = np.clip(_LEVELS[None, :, None] * gains[:, None, :] + 0.5, 0, 255).astype(np.uint8)  # N x 256 x 3
    return np.stack([cv2.LUT(r, t[:, None, :]) for r, t in zip(regions, tables)])


def _measure(regions: list[np.ndarray]) -> np.ndarray:
    """The measurements of several box regions at once: the colour steps on the whole batch, the
    shape steps on one tall image of the regions' nucleus masks stacked (each mask is empty within
    two pixels of its region's edge, so no shape crosses from one region into the next)."""
    s, n = MEASURE_SIZE, len(regions)
    stack = np.stack([cv2.resize(np.ascontiguousarray(r), (s, s), interpolation=cv2.INTER_LINEAR) for r in regions])
    balanced = _white_balanced(stack)
    g = balanced[..., 1]
    # the disc's darkest and lightest green (optical density falls as the level rises)
    top = _OD[np.maximum(g, _OUTSIDE).min(axis=(1, 2))]
    low = _OD[np.minimum(g, _INSIDE).max(axis=(1, 2))]
    measured = (top - low) >= 0.05  # a blank, uniform region: no nucleus to measure
    scale = np.where(measured, top, np.float32(1.0)).astype(np.float32)[:, None]
    tables = np.clip(_OD[None, :] / scale * 255, 0, 255).astype(np.uint8)  # green optical density, 0..255
    nucleus = np.zeros((n, s, s), np.uint8)
    for i in np.flatnonzero(measured):
        level = cv2.LUT(g[i], tables[i])
        t, _ = cv2.threshold(level[_DISC], 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        nucleus[i] = (level > t) & _DISC
    tall = cv2.morphologyEx(nucleus.reshape(n * s, s), cv2.MORPH_OPEN, _OPEN)
    # the nucleus's parts: area, pieces above 8 % of it
    _, _, stats, _ = cv2.connectedComponentsWithStats(tall)
    owner, parts = stats[1:, 1] // s, stats[1:, 4].astype(np.float64)
    area = np.bincount(owner, weights=parts, minlength=n) + 1e-6
    pieces = np.bincount(owner, weights=parts > 0.08 * area[owner], minlength=n)
    # lobes: parts above 5 % of the nucleus that survive a 5x5 erosion
    _, _, stats, _ = cv2.connectedComponentsWithStats(cv2.erode(tall, _ERODE))
    owner_e = stats[1:, 1] // s
    lobes = np.bincount(owner_e, weights=stats[1:, 4] > 0.05 * area[owner_e], minlength=n)
    # outline: perimeter and convex hull of each region's external contours
    contours, _ = cv2.findContours(tall, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    mine: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in contours:
        mine[int(c[0, 0, 1]) // s].append(c)
    perimeter, hull = np.zeros(n), np.ones(n)
    for i, cs in enumerate(mine):
        if not cs:
            continue
        perimeter[i] = sum(cv2.arcLength(c, True) for c in cs)
        points = np.vstack(cs)
        if len(points) > 2:
            hull[i] = cv2.contourArea(cv2.convexHull(points))
    density = _OD[balanced[..., 0]] + _OD[g] + _OD[balanced[..., 2]]
    cell = ((density > 0.25) & _DISC).sum(axis=(1, 2))
    features = np.stack([area / _DISC_AREA, area / np.maximum(cell, 1), np.minimum(area / np.maximum(hull, 1), 1),
                         perimeter ** 2 / (4 * np.pi * area), pieces, lobes], axis=1).astype(np.float32)
    features[~measured] = 0
    return features


@dataclass
class ShapeOpinion:
    """The fitted shape model, its weight and the network temperature its scores are added to."""

    model: object  # sklearn HistGradientBoostingClassifier over class indices 0..K-1
    weight: float
    network_temperature: float
    _flat: object = field(default=None, init=False, repr=False, compare=False)  # _FlatTrees, built when first asked

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> "ShapeOpinion":
        from sklearn.ensemble import HistGradientBoostingClassifier

        missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
        if missing:
            raise ValueError(f"the shape model needs training cells of every class; none of {missing}")
        with threadpool_limits(1):  # OpenMP threads on a busy CPU wait on each other (seconds -> a minute)
            model = HistGradientBoostingClassifier(**TREES, random_state=seed).fit(features, labels)
        return cls(model, 0.0, 1.0)

    def log_proba(self, features: np.ndarray) -> np.ndarray:
        """The shape model's log-probabilities of the cells' classes. A few cells (one image's) go
        through the trees as flat arrays (:class:`_FlatTrees`, the same numbers; scikit-learn's
        predictor costs some 25 ms a call however few the cells), more through scikit-learn."""
        if len(features) <= FLAT_CELLS:
            if self._flat is None:
                self._flat = _FlatTrees.of(self.model)
            if self._flat:
                return self._as_log(self._flat.predict_proba(features))
        with threadpool_limits(1):  # a fraction of a millisecond per cell on one thread; never oversubscribed
            return self._as_log(self.model.predict_proba(features))

    @staticmethod
    def _as_log(p: np.ndarray) -> np.ndarray:
        return np.log(np.clip(p, 1e-9, None)).astype(np.float32)

    def scores(self, logits: np.ndarray, features: np.ndarray, weight: float | None = None) -> np.ndarray:
        """The network's log-probabilities (its ``logits`` at :attr:`network_temperature`) plus
        ``weight`` (default: the fitted one) times the shape model's; a classifier's logits then."""
        return self.joined(logits, self.log_proba(features), weight)

    def joined(self, logits: np.ndarray, shape_log_proba: np.ndarray, weight: float | None = None) -> np.ndarray:
        """:meth:`scores` from the shape model's log-probabilities (:meth:`log_proba`) of the cells."""
        z = logits / self.network_temperature
        log_p = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        return (log_p + (self.weight if weight is None else weight) * shape_log_proba).astype(np.float32)

    def choose_weight(self, logits: np.ndarray, features: np.ndarray, labels: np.ndarray) -> dict:
        """Set :attr:`weight` to the candidate (:data:`WEIGHTS`) with the best accuracy on these
        (validation) cells, the smaller on a tie; return each candidate's accuracy."""
        acc = {w: float((self.scores(logits, features, w).argmax(1) == labels).mean()) for w in WEIGHTS}
        best = max(acc.values())
        self.weight = min(w for w, a in acc.items() if a == best)
        return acc

    def weighed(self, logits: np.ndarray, features: np.ndarray, labels: np.ndarray,
                network_temperature: float) -> tuple["ShapeOpinion", np.ndarray, dict]:
        """This opinion joined to a network whose (validation) ``logits`` are calibrated at
        ``network_temperature``: a copy with the weight chosen on these cells, their joint scores
        (to fit the classifier's temperature on), and what to record in the run's metrics."""
        opinion = replace(self, network_temperature=float(network_temperature))
        accuracy = opinion.choose_weight(logits, features, labels)
        metrics = {"shape_val_accuracy": accuracy, "shape_weight": opinion.weight,
                   "network_val_accuracy": float((logits.argmax(1) == labels).mean()),
                   "network_temperature": opinion.network_temperature}
        return opinion, opinion.scores(logits, features), metrics

    def to_state(self) -> dict:
        import skops.io as sio

        return {"features": list(FEATURES), "measure_size": MEASURE_SIZE, "weight": float(self.weight),
                "network_temperature": float(self.network_temperature),
                "trees": sio.dumps(self.model, compression=zipfile.ZIP_DEFLATED, compresslevel=6)}

    @classmethod
    def from_state(cls, state: dict) -> "ShapeOpinion":
        import skops.io as sio

        if list(state.get("features", [])) != list(FEATURES) or state.get("measure_size") != MEASURE_SIZE:
            raise ValueError("the checkpoint's shape model measures other features than this version of Leukolab")
        data = state["trees"]
        try:
            zipfile.ZipFile(io.BytesIO(data)).close()
        except zipfile.BadZipFile as exc:  # a truncated or foreign blob
            raise ValueError(f"the checkpoint's shape model is damaged ({exc})") from None
        model = sio.loads(data, trusted=_TRUSTED)
        return cls(model, float(state["weight"]), float(state["network_temperature"]))


class _FlatTrees:
    """A fitted HistGradientBoostingClassifier's trees as flat node arrays, walked for all cells and
    trees at once: the same comparisons (missing values where the node sends them, else ``x <=
    threshold`` goes left) and the leaves' values summed iteration by iteration from the baseline, as
    scikit-learn's predictor does, so the probabilities are the same numbers. Reads the fitted
    model's node arrays (scikit-learn's internals, checked by the tests at the pinned version)."""

    def __init__(self, model):
        trees = [p.nodes for iteration in model._predictors for p in iteration]
        self.iterations, self.classes = len(model._predictors), len(model._predictors[0])
        sizes = [len(t) for t in trees]
        offset = np.repeat(np.cumsum([0] + sizes[:-1]), sizes)
        nodes = np.concatenate(trees)
        self.roots = np.cumsum([0] + sizes[:-1])
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"]
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.left = nodes["left"].astype(np.intp) + offset
        self.right = nodes["right"].astype(np.intp) + offset
        self.leaf = nodes["is_leaf"].astype(bool)
        self.value = nodes["value"]
        self.baseline = model._baseline_prediction
        self.loss = model._loss

    @classmethod
    def of(cls, model) -> "_FlatTrees | bool":
        """The flat trees of ``model``, or False where it is not a model they can stand for."""
        try:
            if getattr(model, "_preprocessor", None) is not None or getattr(model, "is_categorical_", None) is not None:
                return False
            return cls(model)
        except (AttributeError, KeyError, ValueError, TypeError, IndexError):
            return False

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float64)
        n, trees = len(x), len(self.roots)
        node = np.tile(self.roots, n)  # one walker per (cell, tree)
        cell = np.repeat(np.arange(n), trees)
        walking = np.flatnonzero(~self.leaf[node])
        while len(walking):
            at = node[walking]
            v = x[cell[walking], self.feature[at]]
            left = np.where(np.isnan(v), self.missing_left[at], v <= self.threshold[at])
            at = np.where(left, self.left[at], self.right[at])
            node[walking] = at
            walking = walking[~self.leaf[at]]
        leaves = self.value[node].reshape(n, self.iterations, self.classes)
        raw = np.zeros((n, self.classes), order="F") + self.baseline
        for i in range(self.iterations):
            raw += leaves[:, i, :]
        return self.loss.predict_proba(raw)


# The one type inside a fitted HistGradientBoostingClassifier that skops does not trust by default.
_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def add_shape_opinion(run, data, out_dir, *, seed: int = 0, progress=None):
    """Save a trained classifier again with a shape opinion fitted on its training data.

    ``data``: the class-per-folder images the network was trained on, split as the benchmark's
    fixed split (the default of ``train``): the trees are fitted on its training cells, the weight
    and the temperature on its validation cells, and the held-out test scores are recorded. A
    network trained on another split would be weighted on cells it has seen. Writes
    ``out_dir/best.pt`` and returns ``out_dir``.
    """
    from pathlib import Path

    from ml.classification.artifact import _resolve, load_classifier, save_checkpoint
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import evaluate_cells, labelled_crops
    from ml.classification.metrics import classification_report, ece, fit_temperature, softmax

    report = progress or (lambda f, m: None)
    path = _resolve(Path(run))
    clf = load_classifier(path)
    if clf.shape_opinion is not None:
        raise ValueError(f"{path} already answers with a shape opinion")
    rule = clf.crop_rule
    cells = load_folder(Path(data), size=cache_size_for(rule.out_size, rule.margin), progress=report)
    tr, va, te = fixed_split(cells.names, cells.labels, seed=int(clf.metrics.get("split_seed", 0)))  # as trained
    report(0.5, "measuring the training cells' nuclei")
    crops, y = labelled_crops(clf, cells.subset(tr))
    shape = ShapeOpinion.fit(features_of_crops(crops, rule.margin), y, len(clf.classes), seed=seed)
    report(0.8, "weighting the opinion on the validation cells")
    crops, y = labelled_crops(clf, cells.subset(va))
    opinion, fused, weighing = shape.weighed(clf.logits_of_crops(crops), features_of_crops(crops, rule.margin), y,
                                             clf.temperature)
    t = fit_temperature(fused, y)
    clf.shape_opinion, clf.temperature = opinion, t
    test = evaluate_cells(clf, cells.subset(te))
    vr = classification_report(y, fused.argmax(1), clf.classes)
    metrics = {**clf.metrics, **weighing, "temperature": t,
               "val_accuracy": vr["accuracy"], "val_macro_f1": vr["macro_f1"], "val_ece": ece(softmax(fused, t), y),
               "test": {k: test[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1", "ece")},
               "shape_opinion_added_to": str(path)}
    out = Path(out_dir)
    save_checkpoint(out / "best.pt", clf.model, architecture=clf.architecture, model_kwargs=clf.model_kwargs,
                    classes=clf.classes, crop=rule, stain_norm=clf.stain_norm,
                    temperature=t, metrics=metrics, mean=clf.mean, std=clf.std, trained_prior=clf.trained_prior,
                    tta=clf.tta, shape_opinion=opinion.to_state(), framings=clf.framings)
    report(1.0, f"shape opinion at weight {opinion.weight}: validation accuracy "
                f"{weighing['network_val_accuracy']:.3f} -> {vr['accuracy']:.3f}")
    return out
