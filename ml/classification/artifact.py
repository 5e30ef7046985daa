"""Saved classifiers: weights plus everything inference needs, and the serving :class:`Classifier`.

A checkpoint is a ``torch.save`` dict (format ``leukolab-classifier/1``): architecture and its
keyword arguments, class list, crop rule, input size, mean/std, stain normalization,
temperature, version, metrics and the state dict. A run directory holds ``best.pt`` and
``last.pt``; loading a directory takes ``best.pt``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ml.boxes import Box
from ml.classification.crop import CropRule, cell_crop, context_weights, crop_rule_from_dict
from ml.classification.morphometry import ShapeOpinion, features_of_crops
from ml.classification.metrics import softmax
from ml.classification.registry import create_classifier
from ml.classification.sample_norm import (STATISTICS_CELLS, balanced_draw, batchnorm_layers, sample_normalized,
                                           statistics_subset)
from ml.classification.stain import normalize
from ml.classification.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from ml.device import resolve_device

FORMAT = "leukolab-classifier/1"
OVERLAP_CELLS = 32  # from this many cells on, the nuclei are measured beside the network
_measurer: ThreadPoolExecutor | None = None


def _measuring_thread() -> ThreadPoolExecutor:
    """The one thread (per process) that measures nuclei while the network runs."""
    global _measurer
    if _measurer is None:
        _measurer = ThreadPoolExecutor(1, thread_name_prefix="leukolab-nuclei")
    return _measurer


def _forget_measuring_thread() -> None:
    """A forked child (a Celery pool process) has no copy of its parent's thread: it starts its own."""
    global _measurer
    _measurer = None


os.register_at_fork(after_in_child=_forget_measuring_thread)


def _digest(crop: np.ndarray) -> bytes:
    """A crop's identity by its pixels (the key of a sample's remembered shape answers)."""
    return hashlib.blake2b(np.ascontiguousarray(crop).tobytes(), digest_size=16).digest()


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]
    confidence: float


TTA_VIEWS = (1, 2, 4, 8)
MAX_FRAMINGS = 5


def check_framings(values) -> tuple[float, ...]:
    """Framings as a classifier keeps them: 1 to ``MAX_FRAMINGS`` distinct factors between 0.5 and 2,
    1 (the box as found) among them, by which each cell's box is scaled about its centre before the
    crop rule frames it; the answer is the mean of the logits over them. A ``ValueError`` otherwise."""
    try:
        out = tuple(sorted({float(v) for v in values}))
    except (TypeError, ValueError):
        raise ValueError(f"framings must be numbers, got {values!r}") from None
    if not 1 <= len(out) <= MAX_FRAMINGS or any(not 0.5 <= v <= 2.0 for v in out) or 1.0 not in out:
        raise ValueError(f"framings must be 1 to {MAX_FRAMINGS} distinct box scales between 0.5 and 2, "
                         f"1 among them, got {values!r}")
    return out


def check_framing_below(value) -> float | None:
    """The confidence under which a cell is answered again over the framings (None: every cell)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the framings' confidence bound must be a number, got {value!r}") from None
    if not 0.0 < v <= 1.0:
        raise ValueError(f"the framings' confidence bound must be in (0, 1], got {value!r}")
    return v


def dihedral_logits(model: torch.nn.Module, x: torch.Tensor, views: int = 1) -> torch.Tensor:
    """Mean logits of ``model`` over ``views`` rotations/flips of the ``Nx3xHxW`` batch ``x``: 1 (as
    is), 2 (+ mirror), 4 (the four right-angle rotations) or 8 (those and their mirrors). A cell has
    no up or down on a slide, and training rotates and mirrors every crop, so each view is a fair
    look at the same cell; the mean is steadier than any one of them."""
    if views not in TTA_VIEWS:
        raise ValueError(f"test-time views must be one of {TTA_VIEWS}, not {views}")
    if views == 1:
        return model(x)
    turns = (0,) if views == 2 else (0, 1, 2, 3)
    mirrors = (False, True) if views in (2, 8) else (False,)
    total = None
    for k in turns:
        for mirror in mirrors:
            v = torch.rot90(x, k, dims=(2, 3)) if k else x
            v = torch.flip(v, dims=(3,)) if mirror else v
            out = model(v.contiguous(memory_format=torch.channels_last)).float()
            total = out if total is None else total + out
    return total / views


def save_checkpoint(path: Path, model: torch.nn.Module, *, architecture: str, model_kwargs: dict,
                    classes: list[str], crop: CropRule, stain_norm: str = "none", temperature: float = 1.0,
                    metrics: dict | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    version: str | None = None, trained_prior: list[float] | None = None,
                    tta: int = 1, shape_opinion: dict | None = None, framings=(1.0,),
                    framing_below: float | None = None) -> dict:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if version is None:
        h = hashlib.sha1()
        for k in sorted(state):
            h.update(state[k].float().numpy().tobytes()[:4096])
        if shape_opinion is not None:  # the same network with an opinion is another classifier
            h.update(shape_opinion["trees"])
        if check_framings(framings) != (1.0,):  # and so is one answering over other framings
            h.update(repr((check_framings(framings), check_framing_below(framing_below))).encode())
        version = f"{architecture}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{h.hexdigest()[:8]}"
    ckpt = {
        "format": FORMAT,
        "architecture": architecture,
        "model_kwargs": dict(model_kwargs),
        "classes": [str(c) for c in classes],
        "crop": crop.as_dict(),
        "input_size": [3, crop.out_size, crop.out_size],
        "mean": list(mean),
        "std": list(std),
        "stain_norm": stain_norm,
        "temperature": float(temperature),
        # class frequencies the model was trained under (None: uniform, i.e. balanced sampling)
        "trained_prior": None if trained_prior is None else [float(v) for v in trained_prior],
        "tta": int(tta),
        # box scales whose crops' logits are averaged for each cell's answer (check_framings)
        "framings": list(check_framings(framings)),
        # only cells answered with less confidence than this with the box as found (None: every cell)
        "framing_below": check_framing_below(framing_below),
        "version": version,
        "metrics": json.loads(json.dumps(metrics or {})),
        "state_dict": state,
    }
    if shape_opinion is not None:  # morphometry.ShapeOpinion.to_state(); absent: the network alone
        ckpt["shape_opinion"] = shape_opinion
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return ckpt


def _resolve(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"{path} holds no best.pt or last.pt")
    if not path.exists():
        raise FileNotFoundError(f"no classifier at {path}")
    return path


class Classifier:
    """A trained classifier ready to serve: crops cells by the artifact's rule, batches them, runs
    them on ``device`` (see :mod:`ml.device`; the GPU when there is one, unless told otherwise)."""

    def __init__(self, ckpt: dict, path: Path | None = None, batch_size: int = 256, prior=None, device=None):
        if ckpt.get("format") != FORMAT:
            raise ValueError(f"{path or 'checkpoint'} is not a Leukolab classifier ({FORMAT})")
        self.path = path
        self.classes: list[str] = list(ckpt["classes"])
        self.architecture: str = ckpt["architecture"]
        self.version: str = ckpt["version"]
        self.metrics: dict = ckpt.get("metrics") or {}
        self.crop_rule: CropRule = crop_rule_from_dict(ckpt["crop"])
        self._fade = context_weights(self.crop_rule)
        self.mean, self.std = tuple(ckpt["mean"]), tuple(ckpt["std"])
        self.stain_norm: str = ckpt.get("stain_norm", "none")
        self.temperature: float = float(ckpt.get("temperature", 1.0))
        self.model_kwargs = ckpt.get("model_kwargs", {})
        self.model = create_classifier(self.architecture, len(self.classes), **self.model_kwargs)
        self.model.load_state_dict(ckpt["state_dict"])
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.trained_prior = ckpt.get("trained_prior")
        self.tta: int = int(ckpt.get("tta", 1))  # test-time views (dihedral_logits)
        # each cell answered from crops of its box at these scales, logits averaged (check_framings)
        self.framings: tuple[float, ...] = check_framings(ckpt.get("framings", (1.0,)))
        # ... where its confidence with the box as found is below this (None: every cell)
        self.framing_below: float | None = check_framing_below(ckpt.get("framing_below"))
        # the nucleus's shape as a second opinion (morphometry); None: the network alone
        self.shape_opinion = ShapeOpinion.from_state(ckpt["shape_opinion"]) if ckpt.get("shape_opinion") else None
        # what a sample's balanced draw reads the cells' classes from (sample_normalized): "shape", the
        # shape opinion's answers (measured once, kept for the sample's answers), where there is one;
        # else "network", the network's answers as trained (a pass of the network more)
        self.balance_by: str = "shape" if self.shape_opinion is not None else "network"
        self._shape_memo: dict[bytes, np.ndarray] = {}  # crop digest -> shape log-probabilities (one sample's)
        self.set_prior(prior)

    def set_prior(self, prior) -> None:
        """Expected class frequencies of the cells to classify (:mod:`priors`): ``None`` or
        ``"uniform"`` (the model as trained), ``"blood"``, a dict or a JSON file."""
        from ml.classification.priors import load_prior, prior_shift, prior_vector

        self.prior = load_prior(prior)
        self.prior_name = prior if isinstance(prior, str) else ("uniform" if prior is None else "custom")
        self.log_prior = prior_shift(self.classes, self.prior, self.trained_prior)
        self.prior_probs = prior_vector(self.classes, self.prior)

    def adapt(self, probabilities: np.ndarray, strength: float) -> tuple[np.ndarray, dict[str, float]]:
        """The probabilities of one sample's cells (as this classifier gave them) re-weighted to the
        sample's own class frequencies (:func:`priors.adapt`); returns them and the frequencies."""
        from ml.classification.priors import adapt

        probs, freq = adapt(probabilities, self.prior_probs, strength)
        return probs, {c: float(f) for c, f in zip(self.classes, freq)}

    def sample_normalized(self, crops: np.ndarray, strength: float, balanced: bool = False,
                          max_cells: int | None = STATISTICS_CELLS) -> "Classifier":
        """This classifier with its network's normalization statistics moved towards those of one
        sample's cells (``crops`` as :meth:`crops` cuts them; :mod:`sample_norm`, the trained
        statistics counting as ``strength`` cells). ``balanced``: the statistics are taken over the
        cells resampled to a balanced class mix, as in training (:func:`sample_norm.balanced_draw`),
        by the classes :attr:`balance_by` reads: the shape opinion's answers (colour-blind, so
        another lab's look biases them less; the copy keeps them for its answers on these cells, so
        the draw costs no pass of the network) or the network's own answers as trained. A sample of
        more than ``max_cells`` cells lends its statistics through that many of them, drawn at
        random, at its full weight (:func:`sample_norm.statistics_subset`; None: all). The copy
        shares everything else."""
        if self.balance_by not in ("shape", "network"):
            raise ValueError(f"balance_by must be 'shape' or 'network', not {self.balance_by!r}")
        pool = crops[statistics_subset(len(crops), max_cells)]
        draw, memo = None, {}
        if balanced and len(pool):
            if self.balance_by == "shape" and self.shape_opinion is not None:
                shape = self.shape_log_proba(pool, halves=True)
                memo = dict(zip(map(_digest, pool), shape))
                draw = balanced_draw(np.exp(shape))
            else:
                t = self.shape_opinion.network_temperature if self.shape_opinion is not None else self.temperature
                draw = balanced_draw(softmax(self.network_logits(pool), t))

        def batches():
            if draw is None:
                for i in range(0, len(pool), self.batch_size):
                    yield self.network_input(pool[i:i + self.batch_size])
                return
            # the draw repeats cells: each of its batches passes its distinct cells once, counted
            for i in range(0, len(draw), self.batch_size):
                cells, counts = np.unique(draw[i:i + self.batch_size], return_counts=True)
                yield self.network_input(pool[cells]), torch.from_numpy(counts)

        other = copy.copy(self)
        other.model = sample_normalized(self.model, batches(), len(crops), strength)
        other._shape_memo = memo
        return other

    def normalization_state(self) -> dict[str, np.ndarray]:
        """The network's batch-norm statistics (running means and variances by layer name): what
        :meth:`sample_normalized` moves, to keep with a sample and give back to this classifier
        with :meth:`with_normalization_state` (empty for a network without batch norm)."""
        names = {id(m): n for n, m in self.model.named_modules()}
        state = {}
        for bn in batchnorm_layers(self.model):
            state[f"{names[id(bn)]}.running_mean"] = bn.running_mean.detach().cpu().numpy().copy()
            state[f"{names[id(bn)]}.running_var"] = bn.running_var.detach().cpu().numpy().copy()
        return state

    def with_normalization_state(self, state: dict[str, np.ndarray]) -> "Classifier":
        """This classifier with the batch-norm statistics of :meth:`normalization_state` (e.g. of the
        same classifier normalized on a sample); a state that does not fit this network raises."""
        expected = self.normalization_state()
        if set(state) != set(expected) or any(np.shape(state[k]) != expected[k].shape for k in expected):
            raise ValueError("these normalization statistics are not of this classifier's network")
        other = copy.copy(self)
        other.model = copy.deepcopy(self.model).eval()
        modules = dict(other.model.named_modules())
        for key, value in state.items():
            name, buffer = key.rsplit(".", 1)
            getattr(modules[name], buffer).copy_(torch.as_tensor(value))
        other._shape_memo = {}
        return other

    # -- preprocessing ---------------------------------------------------------------------
    def crops(self, image: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """The cells' crops exactly as the model sees them (before tensor normalization)."""
        r = self.crop_rule
        out = [normalize(cell_crop(image, b, r.margin, r.out_size), self.stain_norm) for b in boxes]
        return np.stack(out) if out else np.zeros((0, r.out_size, r.out_size, 3), np.uint8)

    def tensor(self, crops: np.ndarray) -> torch.Tensor:
        """The crops as a normalized ``Nx3xHxW`` batch on the classifier's device."""
        return to_tensor(crops, self.mean, self.std, fade=self._fade).to(self.device)

    def network_input(self, crops: np.ndarray) -> torch.Tensor:
        """:meth:`tensor` in the memory layout the network runs fastest on (channels last)."""
        return self.tensor(crops).contiguous(memory_format=torch.channels_last)

    # -- inference -------------------------------------------------------------------------
    def logits_of_crops(self, crops: np.ndarray) -> np.ndarray:
        """The classifier's logits: the network's, with the shape opinion added where there is one.
        For many cells the nuclei are measured and judged in a second thread while the network runs
        (OpenCV, numpy and the trees mostly release Python's lock)."""
        if self.shape_opinion is None or not len(crops):
            return self.network_logits(crops)
        opinion = self.shape_opinion
        if len(crops) < OVERLAP_CELLS:
            return opinion.joined(self.network_logits(crops), self.shape_log_proba(crops))
        shape = _measuring_thread().submit(self.shape_log_proba, crops)
        logits = self.network_logits(crops)
        return opinion.joined(logits, shape.result())

    def shape_log_proba(self, crops: np.ndarray, halves: bool = False) -> np.ndarray:
        """The shape opinion's log-probabilities of the cells (``crops`` as :meth:`crops` cuts them);
        those of the sample this copy was normalized on as the draw measured them
        (:meth:`sample_normalized`), the others measured now. ``halves``: when nothing else runs,
        many cells are measured half in this thread, half in the measuring thread (never from that
        thread itself)."""
        memo, margin = self._shape_memo, self.crop_rule.margin
        if not memo:
            if halves and len(crops) >= 2 * OVERLAP_CELLS:
                half = len(crops) // 2
                rest = _measuring_thread().submit(features_of_crops, crops[half:], margin)
                features = np.concatenate([features_of_crops(crops[:half], margin), rest.result()])
            else:
                features = features_of_crops(crops, margin)
            return self.shape_opinion.log_proba(features)
        known = [memo.get(_digest(c)) for c in crops]
        todo = [i for i, k in enumerate(known) if k is None]
        out = np.empty((len(crops), len(self.classes)), np.float32)
        if todo:
            out[todo] = self.shape_opinion.log_proba(features_of_crops(crops[todo], margin))
        for i, k in enumerate(known):
            if k is not None:
                out[i] = k
        return out

    def framed_cells(self, logits: np.ndarray) -> np.ndarray:
        """Which cells, given their logits with the box as found, are answered again over the
        framings: those whose served confidence is below :attr:`framing_below` (every cell without
        a bound; none with one framing)."""
        if self.framings == (1.0,) or not len(logits):
            return np.zeros(0, np.int64)
        if self.framing_below is None:
            return np.arange(len(logits))
        confidence = softmax(self.scaled_logits(logits), self.temperature).max(1)
        return np.flatnonzero(confidence < self.framing_below)

    def framed_logits(self, crops: np.ndarray, cut: Callable[[float, np.ndarray], np.ndarray]) -> np.ndarray:
        """The classifier's logits of cells over its framings. ``crops``: the cells cut with their boxes
        as found (:meth:`crops`); ``cut(f, idx)``: the crops of the cells ``idx`` with their boxes scaled
        by ``f`` (:meth:`cut_each`). Each cell's logits are the mean over the framings
        (:meth:`logits_of_crops` of each); only the cells :meth:`framed_cells` picks are cut again, the
        others keep their first answer."""
        logits = self.logits_of_crops(crops)
        idx = self.framed_cells(logits)
        if not len(idx):
            return logits
        total = logits[idx].astype(np.float64)
        for f in self.framings:
            if f != 1.0:
                total += self.logits_of_crops(cut(f, idx))
        out = logits.copy()
        out[idx] = total / len(self.framings)
        return out

    def cut_each(self, images, boxes: list[Box]) -> Callable[[float, np.ndarray], np.ndarray]:
        """``cut(f, idx)`` for :meth:`framed_logits`: the crops of cells ``idx``, cell ``i`` being
        ``boxes[i]`` of ``images[i]``, with the boxes scaled by ``f``."""
        return lambda f, idx: np.concatenate([self.crops(images[i], [boxes[i].scaled(f)]) for i in idx])

    def logits_of_boxes(self, image: np.ndarray, boxes: list[Box], crops: np.ndarray | None = None) -> np.ndarray:
        """The classifier's logits of the cells in ``boxes`` of ``image``, over its framings
        (``crops``: theirs with the boxes as found, where already cut)."""
        crops = self.crops(image, boxes) if crops is None else crops
        return self.framed_logits(crops, self.cut_each([image] * len(boxes), boxes))

    def network_logits(self, crops: np.ndarray) -> np.ndarray:
        """The network's own logits (its test-time views averaged)."""
        outs = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = self.network_input(crops[i:i + self.batch_size])
                outs.append(dihedral_logits(self.model, x, self.tta).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)

    def scaled_logits(self, logits: np.ndarray) -> np.ndarray:
        """Logits whose softmax at the model's temperature includes the class prior."""
        return logits + self.temperature * self.log_prior

    def probabilities_of_crops(self, crops: np.ndarray) -> np.ndarray:
        return softmax(self.scaled_logits(self.logits_of_crops(crops)), self.temperature)

    def _explained(self, image: np.ndarray, boxes: list[Box], crops: np.ndarray, method: str) -> list[int] | None:
        """The classes Grad-CAM is to explain: the answers given, over the classifier's framings (None
        where attention maps are drawn); ``crops``: the cells' crops with the boxes as found."""
        attention = method == "attention" or (method == "auto" and hasattr(self.model, "attention_maps"))
        return None if attention else self.scaled_logits(self.logits_of_boxes(image, boxes, crops)).argmax(1).tolist()

    def predictions(self, probs: np.ndarray) -> list[Prediction]:
        out = []
        for p in probs:
            k = int(p.argmax())
            out.append(Prediction(self.classes[k], {c: float(v) for c, v in zip(self.classes, p)}, float(p[k])))
        return out

    def classify(self, image: np.ndarray, boxes: list[Box]) -> list[Prediction]:
        """One prediction per box of ``image`` (an ``HxWx3`` uint8 RGB array)."""
        if not boxes:
            return []
        return self.predictions(softmax(self.scaled_logits(self.logits_of_boxes(image, boxes)), self.temperature))

    def heatmaps(self, image: np.ndarray, boxes: list[Box], method: str = "gradcam") -> list[np.ndarray]:
        """One ``out_size x out_size`` float map in [0, 1] per cell (see :mod:`heatmaps`)."""
        from ml.classification.heatmaps import cell_heatmaps

        crops = self.crops(image, boxes)
        if not boxes:
            return []
        return list(cell_heatmaps(self.model, self.tensor(crops), method=method,
                                  target=self._explained(image, boxes, crops, method)))

    def heatmap_overlays(self, image: np.ndarray, boxes: list[Box], method: str = "gradcam",
                         labels: list[str] | None = None) -> list[np.ndarray]:
        """One ``HxWx3`` uint8 overlay per cell: its crop with the heatmap blended in.

        Grad-CAM by default (it explains the class given, or ``labels`` where the caller has them;
        ~200 cells/s on one thread); ``method="attention"`` gives the attention models' own maps
        (no backward pass)."""
        from ml.classification.heatmaps import cell_heatmaps, overlay

        if not boxes:
            return []
        crops = self.crops(image, boxes)
        target = ([self.classes.index(lab) for lab in labels] if labels is not None
                  else self._explained(image, boxes, crops, method))
        maps = cell_heatmaps(self.model, self.tensor(crops), method=method, target=target)
        return [overlay(c, m) for c, m in zip(crops, maps)]


def load_classifier(path: str | os.PathLike, prior=None, device=None) -> Classifier:
    """Load a classifier from a run directory (its ``best.pt``) or a checkpoint file; ``prior``: the
    expected class frequencies (see :mod:`ml.classification.priors`; default as trained); ``device``:
    where it runs (:func:`ml.device.resolve_device`; default ``$LEUKOLAB_DEVICE`` or auto)."""
    p = _resolve(Path(path))
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:  # cut short, or no checkpoint
        raise ValueError(f"{p}: not a Leukolab classifier checkpoint, or cut short ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{p}: not a Leukolab classifier checkpoint")
    return Classifier(ckpt, p, prior=prior, device=device)
