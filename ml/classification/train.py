"""Training: plain functions (``train_one_epoch``, ``predict_logits``, ``fit``) over a CellSet.

``fit`` writes a run directory: ``config.json``, ``log.json`` (per epoch: loss, accuracy and
macro-F1 for train and validation), ``best.pt`` (by validation macro-F1) and ``last.pt``.
A time budget anneals the learning rate on elapsed time, so a budgeted run always finishes
its schedule.
"""
from __future__ import annotations

import json
import math
import numbers
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ml.classification.artifact import save_checkpoint
from ml.classification.crop import FADE_ROOM, CropRule, context_weights
from ml.classification.data import CellSet
from ml.classification.metrics import classification_report, fit_temperature, softmax, ece
from ml.classification.morphometry import ShapeOpinion, features_of_crops
from ml.classification.registry import create_classifier
from ml.classification.stain import normalize
from ml.classification.transforms import (AugmentConfig, amplitude_mix, geometric_crop_placed, photometric,
                                         random_convolution, swap_surroundings, to_tensor)
from ml.device import free_cores, resolve_device
from ml.prefetch import prefetched

Progress = Callable[[float, str], None]


@dataclass
class TrainConfig:
    backbone: str = "cbam_cnn_small"
    epochs: int = 20
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    img_size: int = 64
    margin: float = 0.2
    # the cell's surroundings faded towards white in what the network sees (crop.CropRule.fade; 0: off)
    fade: float = 0.0
    # probability per training crop of its surroundings faded by a fraction drawn in [fade, 1] (0: off);
    # what is served keeps ``fade``
    fade_p: float = 0.0
    # probability per training crop of its surroundings (beyond the cell's circle, crop.FADE_ROOM) taken
    # from another crop of the batch, before colour augmentation (transforms.swap_surroundings; 0: off)
    context_swap: float = 0.0
    mixup: float = 0.0  # alpha of the Beta distribution; 0 disables
    # CutMix: alpha of the Beta distribution of the kept area; a rectangle of another crop of the batch
    # is pasted in and the loss weighted by area (0 disables; with mixup too, half the mixed batches each)
    cutmix: float = 0.0
    # Consistency between two colour views: each cell of a batch is cut once and given two independent
    # photometric augmentations; the loss adds this weight times the Jensen-Shannon divergence of their
    # predictions (AugMix's consistency; 0: off, one view). Twice the images per step.
    consistency: float = 0.0
    label_smoothing: float = 0.05
    freeze_bn: bool = False
    seed: int = 0
    balance: bool = True
    stain_norm: str = "none"
    pretrained: bool = False
    augment: float = 1.0  # photometric augmentation strength
    augment_options: dict = field(default_factory=dict)  # AugmentConfig fields, e.g. {"stain_scale": 1.0}
    # probability per crop of a random convolution (transforms.random_convolution; 0: off)
    random_conv: float = 0.0
    # probability per crop of an amplitude spectrum mixed with another crop's (transforms.amplitude_mix; 0: off)
    amp_mix: float = 0.0
    time_budget_s: float | None = None
    # Exponential moving average of the weights (decay per step; 0: off). Validation, best.pt and
    # last.pt then hold the averaged weights; the log keeps the raw weights' validation scores too.
    ema: float = 0.0
    # Test-time augmentation kept in the checkpoint: predictions average the logits of this many
    # rotations/flips of each crop (1, 2, 4 or 8; see artifact.dihedral_logits).
    tta: int = 1
    # Two cores: one torch thread for the model, one thread for augmentation. More
    # threads than free cores slows torch down ten-fold on a busy machine. On a GPU the model
    # waits for augmentation: there ``workers=None`` gives it as many threads as there are free cores.
    threads: int | None = 1
    workers: int | None = None  # augmentation threads (0: in the training loop; None: 1 on a CPU, free cores on a GPU)
    device: str = "auto"  # auto (a GPU when torch sees one), cpu, cuda or cuda:N (ml.device)
    # bfloat16 mixed precision on a CPU with native bfloat16 arithmetic (AVX-512 BF16 or AMX);
    # ignored on other CPUs (emulated bfloat16 is slower than float32) and on a GPU (float16 there)
    cpu_bf16: bool = False
    model_kwargs: dict = field(default_factory=dict)
    # The nucleus's shape as a second opinion (morphometry.ShapeOpinion), fitted on the training
    # cells, weighted and calibrated on the validation cells; needs validation cells.
    shape_opinion: bool = False
    # Seed of the train/validation/test split the run was trained on (data.fixed_split; 0: the
    # benchmark's), kept in the checkpoint so its test part is scored later, never its training part.
    split_seed: int = 0

    def __post_init__(self) -> None:
        """Options of the wrong type or out of range are a ``ValueError`` naming them (a config file's
        ``epochs: ten`` or ``--batch 0`` would otherwise fail deep inside training)."""
        kinds = {"int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,), "str": (str,), "dict": (dict,)}
        for f in fields(self):
            value = getattr(self, f.name)
            base = str(f.type).split(" | ")
            allowed = tuple(t for b in base for t in kinds.get(b, ()))
            if value is None and "None" in base:
                continue
            if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
                hint = ""
                if isinstance(value, str) and "float" in base:
                    try:
                        hint = f" (YAML reads {value} as text: write {float(value)!r})"
                    except ValueError:
                        pass
                raise ValueError(f"option {f.name} must be {' or '.join(base)}, got {value!r}{hint}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"option {f.name} must be a finite number, got {value!r}")
        checks = [("epochs", self.epochs >= 1, "at least 1"), ("batch", self.batch >= 1, "at least 1"),
                  ("img_size", self.img_size >= 16, "at least 16"), ("lr", self.lr > 0, "positive"),
                  ("margin", 0 <= self.margin <= 2, "between 0 and 2"),
                  ("fade", 0 <= self.fade <= 1, "between 0 and 1"),
                  ("fade_p", 0 <= self.fade_p <= 1, "a probability"),
                  ("context_swap", 0 <= self.context_swap <= 1, "a probability"), ("mixup", self.mixup >= 0, "0 or more"),
                  ("cutmix", self.cutmix >= 0, "0 or more"),
                  ("consistency", self.consistency >= 0, "0 or more"),
                  ("tta", self.tta in (1, 2, 4, 8), "1, 2, 4 or 8"), ("ema", 0 <= self.ema < 1, "in [0, 1)"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("random_conv", 0 <= self.random_conv <= 1, "a probability"),
                  ("amp_mix", 0 <= self.amp_mix <= 1, "a probability"), ("augment", self.augment >= 0, "0 or more"),
                  ("time_budget_s", self.time_budget_s is None or self.time_budget_s > 0, "positive"),
                  ("threads", self.threads is None or self.threads >= 1, "at least 1"),
                  ("workers", self.workers is None or self.workers >= 0, "0 or more")]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"option {name} must be {what}, got {getattr(self, name)!r}")
        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(self.augment_options) - known)
        if unknown:
            raise ValueError(f"unknown augment_options {unknown}; known: {sorted(known)}")
        if self.consistency > 0 and (self.mixup > 0 or self.cutmix > 0):
            raise ValueError("option consistency does not go with mixup or cutmix (their mixed crops have no "
                             "second view of the same cell)")


def cutmix_batch(x: torch.Tensor, perm: torch.Tensor, lam: float,
                 rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """Paste into each crop of ``x`` a rectangle of the crop ``perm`` points to (CutMix).

    The rectangle covers about ``1 - lam`` of the crop, centred anywhere and clipped at the edges;
    returns the mixed batch and the share of each crop that is still its own, the weight of its label.
    """
    h, w = x.shape[-2:]
    cut_h, cut_w = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def js_divergence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean Jensen-Shannon divergence between the softmax distributions of logits ``a`` and ``b``
    (rows), in nats: 0 where they agree, at most log 2."""
    pa, pb = F.softmax(a, 1), F.softmax(b, 1)
    log_m = ((pa + pb) / 2).clamp_min(1e-7).log()
    return 0.5 * (F.kl_div(log_m, pa, reduction="batchmean") + F.kl_div(log_m, pb, reduction="batchmean"))


def native_cpu_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class AugmentedCrops(torch.utils.data.Dataset):
    def __init__(self, cells: CellSet, cfg: TrainConfig):
        self.cells, self.cfg = cells, cfg
        self.rule = CropRule(cfg.margin, cfg.img_size, cfg.fade)
        self.fade = context_weights(self.rule)
        self.aug = AugmentConfig(strength=cfg.augment, **cfg.augment_options)

    def __len__(self):
        return len(self.cells)

    @property
    def n_views(self) -> int:
        return 2 if self.cfg.consistency > 0 else 1

    def views(self, crop: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """A cell's photometric views of its cut ``crop``: two with ``consistency``, each coloured on its
        own, else one."""
        return [normalize(photometric(crop, rng, self.aug), self.cfg.stain_norm) for _ in range(self.n_views)]

    def cut(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
        return geometric_crop_placed(self.cells.images[i], self.cells.box(i), self.rule, rng, self.aug)

    def all_views(self, idx: np.ndarray, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """Each cell's views. With ``context_swap``, the batch's cells are all cut first and some given
        another's surroundings; without, each is cut and coloured in turn (the draws of earlier runs)."""
        if self.cfg.context_swap <= 0 or self.cfg.augment <= 0:
            return [self.views(self.cut(int(i), rng)[0], rng) for i in idx]
        cut = [self.cut(int(i), rng) for i in idx]
        crops = swap_surroundings([c for c, _ in cut], [p for _, p in cut], rng, self.cfg.context_swap, FADE_ROOM)
        return [self.views(crop, rng) for crop in crops]

    def faded(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """The context weights of a batch of ``n`` crops: the crop rule's, and with ``fade_p`` each crop's
        surroundings, with that probability, faded by a fraction drawn in [fade, 1] (``Nx1xHxW``)."""
        if self.cfg.fade_p <= 0 or self.cfg.augment <= 0:
            return self.fade
        plain = self.fade if self.fade is not None else np.ones((self.rule.out_size,) * 2, np.float32)
        out = np.repeat(plain[None, None], n, axis=0)
        for j in np.flatnonzero(rng.random(n) < self.cfg.fade_p):
            drawn = CropRule(self.rule.margin, self.rule.out_size, float(rng.uniform(self.cfg.fade, 1.0)))
            out[j, 0] = context_weights(drawn) if drawn.fade > 0 else plain
        return out

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's crops and labels; with ``consistency``, the first views of every cell, then the
        second views in the same order (twice the crops, the labels once)."""
        views = self.all_views(idx, rng)
        x = to_tensor([v[k] for k in range(self.n_views) for v in views], fade=self.faded(len(idx) * self.n_views, rng))
        if self.cfg.random_conv > 0 and self.cfg.augment > 0:
            x = random_convolution(x, rng, self.cfg.random_conv)
        if self.cfg.amp_mix > 0 and self.cfg.augment > 0:
            x = amplitude_mix(x, rng, self.cfg.amp_mix)
        return x, torch.from_numpy(self.cells.labels[idx])


class EpochBatches:
    """The augmented batches of one epoch, in order; batch ``b`` is drawn from its own generator
    seeded by (seed, epoch, b), so the result does not depend on how many threads prepare them.

    With ``workers`` > 0, that many threads prepare the next batches while the model trains on
    this one (:mod:`ml.prefetch`).
    """

    def __init__(self, ds: AugmentedCrops, order: np.ndarray, batch: int, epoch: int, workers: int = 0):
        self.ds, self.order, self.bs, self.epoch, self.workers = ds, order, batch, epoch, workers

    def make(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.ds.cfg.seed, self.epoch, b])
        return self.ds.batch(self.order[b * self.bs:(b + 1) * self.bs], rng)

    def __iter__(self):
        return prefetched(self.make, len(self), self.workers)

    def __len__(self):
        return len(self.order) // self.bs


def eval_crops(cells: CellSet, cfg: TrainConfig) -> np.ndarray:
    crops = cells.crops(cfg.margin, cfg.img_size)
    if cfg.stain_norm not in ("none", None, ""):
        crops = np.stack([normalize(c, cfg.stain_norm) for c in crops])
    return crops


def predict_logits(model: nn.Module, crops: np.ndarray, batch: int = 256, tta: int = 1,
                   fade: np.ndarray | None = None) -> np.ndarray:
    from ml.classification.artifact import dihedral_logits

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            x = to_tensor(crops[i:i + batch], fade=fade).to(device).contiguous(memory_format=torch.channels_last)
            out.append(dihedral_logits(model, x, tta).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def epoch_order(labels: np.ndarray, balance: bool, rng: np.random.Generator) -> np.ndarray:
    """One epoch's sample order; with ``balance`` every class is drawn equally often."""
    if not balance:
        return rng.permutation(len(labels))
    counts = np.bincount(labels)
    w = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=w / w.sum())


def fit(cfg: TrainConfig, train: CellSet, val: CellSet | None, out_dir: Path, *,
        progress: Progress | None = None, extra_metrics: dict | None = None) -> Path:
    """Train ``cfg.backbone`` on ``train``; validate on ``val`` each epoch; write a run dir."""
    t_start = time.time()
    if cfg.shape_opinion and (val is None or not len(val)):
        raise ValueError("shape_opinion needs validation cells: its weight and calibration are fitted on them")
    seed_everything(cfg.seed)
    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(cfg, train, val, out_dir, progress, extra_metrics, t_start)
    finally:
        torch.set_num_threads(prev_threads)


def _fit(cfg, train, val, out_dir, progress, extra_metrics, t_start) -> Path:
    if len(train) < cfg.batch:  # a small data set still gets whole batches, so every epoch trains
        cfg = replace(cfg, batch=max(2, len(train)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    classes = train.classes
    device = resolve_device(cfg.device)
    on_gpu = device.type == "cuda"
    workers = cfg.workers if cfg.workers is not None else (free_cores() if on_gpu else 1)
    model = create_classifier(cfg.backbone, len(classes), pretrained=cfg.pretrained, **cfg.model_kwargs)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # mixed precision on a GPU (float16 with loss scaling); on a CPU full precision unless cpu_bf16
    scaler = torch.amp.GradScaler("cuda", enabled=on_gpu)
    cpu_bf16 = not on_gpu and cfg.cpu_bf16 and native_cpu_bf16()
    averaged = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    served = averaged.module if averaged is not None else model  # what validation and checkpoints see
    ds = AugmentedCrops(train, cfg)
    rng = np.random.default_rng(cfg.seed)
    val_crops = eval_crops(val, cfg) if val is not None and len(val) else None
    steps_per_epoch = max(1, len(train) // cfg.batch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = 0.03  # fraction of the schedule spent warming up
    rule = CropRule(cfg.margin, cfg.img_size, cfg.fade)
    fade = context_weights(rule)
    log, best, step = [], -1.0, 0
    t_loop = time.time()
    last_report = -1.0
    done = False
    # balanced sampling trains under a uniform prior; otherwise under the training set's frequencies
    counts = np.bincount(train.labels, minlength=len(classes)).astype(float)
    if (counts == 0).any():
        raise ValueError(f"no training image of {', '.join(c for c, n in zip(classes, counts) if n == 0)}: "
                         "every class needs some")
    trained_prior = None if cfg.balance else (counts / max(counts.sum(), 1.0)).tolist()
    ckpt_args = dict(architecture=cfg.backbone, model_kwargs=cfg.model_kwargs, classes=classes, crop=rule,
                     stain_norm=cfg.stain_norm, trained_prior=trained_prior, tta=cfg.tta)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    for epoch in range(cfg.epochs):
        model.train()
        if cfg.freeze_bn:
            _set_bn_eval(model)
        order = epoch_order(train.labels, cfg.balance, rng)
        losses, correct, seen, preds, trues = [], 0, 0, [], []
        loader = EpochBatches(ds, order, cfg.batch, epoch, workers=workers)
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None) if tqdm else loader
        for x, y in bar:
            elapsed = time.time() - t_start
            frac = step / total_steps
            if cfg.time_budget_s:
                frac = max(frac, elapsed / cfg.time_budget_s)
            if frac >= 1.0:
                done = True
                break
            if frac < warmup:
                lr = cfg.lr * max(frac / warmup, 0.02)
            else:
                lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))
            for g in opt.param_groups:
                g["lr"] = lr
            x = x.to(device, non_blocking=on_gpu).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=on_gpu)
            lam, perm = 1.0, None
            if (cfg.mixup > 0 or cfg.cutmix > 0) and rng.random() < 0.5:
                perm = torch.randperm(len(x), device=device)
                if cfg.cutmix > 0 and (cfg.mixup == 0 or rng.random() < 0.5):
                    x, lam = cutmix_batch(x, perm, float(rng.beta(cfg.cutmix, cfg.cutmix)), rng)
                else:
                    lam = float(rng.beta(cfg.mixup, cfg.mixup))
                    x = lam * x + (1 - lam) * x[perm]
            with torch.autocast(device.type, dtype=torch.bfloat16 if cpu_bf16 else None,
                                enabled=on_gpu or cpu_bf16):
                logits = model(x)
                if cfg.consistency > 0:  # two views of each cell: both learn the label, and agree
                    loss = (F.cross_entropy(logits, y.repeat(2), label_smoothing=cfg.label_smoothing)
                            + cfg.consistency * js_divergence(*logits.float().chunk(2)))
                    logits = logits[:len(y)]
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                if perm is not None:
                    loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            losses.append(float(loss.detach()))
            p = logits.argmax(1)
            preds.append(p.cpu().numpy())
            trues.append(y.cpu().numpy())
            if progress and cfg.time_budget_s and frac - last_report >= 0.01:
                last_report = frac
                progress(min(0.99, frac), f"epoch {epoch + 1} loss {losses[-1]:.3f}")
        if not preds:
            break
        tr = classification_report(np.concatenate(trues), np.concatenate(preds), classes)
        entry = {"epoch": epoch + 1, "lr": lr, "time_s": round(time.time() - t_start, 1),
                 "train_loss": float(np.mean(losses)), "train_accuracy": tr["accuracy"], "train_macro_f1": tr["macro_f1"]}
        score = tr["macro_f1"]
        if val_crops is not None:
            vl = predict_logits(served, val_crops, fade=fade)
            vr = classification_report(val.labels, vl.argmax(1), classes)
            entry.update(val_loss=float(F.cross_entropy(torch.from_numpy(vl), torch.from_numpy(val.labels))),
                         val_accuracy=vr["accuracy"], val_macro_f1=vr["macro_f1"])
            score = vr["macro_f1"]
            if averaged is not None:
                raw = classification_report(val.labels, predict_logits(model, val_crops, fade=fade).argmax(1), classes)
                entry.update(val_accuracy_raw=raw["accuracy"], val_macro_f1_raw=raw["macro_f1"])
        log.append(entry)
        (out_dir / "log.json").write_text(json.dumps(log, indent=1))
        if progress and not cfg.time_budget_s:
            progress((epoch + 1) / cfg.epochs, json.dumps(entry))
        if score >= best:
            best = score
            save_checkpoint(out_dir / "best.pt", served, **ckpt_args,
                            metrics={"epoch": epoch + 1, "split_seed": cfg.split_seed, **entry})
        if done:
            break
    # Final artifacts: last weights; temperature fitted on validation for both checkpoints.
    metrics = {"train_time_s": round(time.time() - t_start, 1), "epochs_run": len(log), "steps": step,
               "device": str(device), "mixed_precision": on_gpu or cpu_bf16,
               "precision": "float16" if on_gpu else "bfloat16" if cpu_bf16 else "float32",
               "train_images_per_s": round(step * cfg.batch / max(1e-6, time.time() - t_loop), 1),
               "n_train": len(train), "n_val": len(val) if val is not None else 0, "split_seed": cfg.split_seed,
               **(extra_metrics or {})}
    save_checkpoint(out_dir / "last.pt", served, **ckpt_args, metrics={**metrics, **(log[-1] if log else {})})
    if best < 0:  # the budget ran out before a whole epoch was scored
        save_checkpoint(out_dir / "best.pt", served, **ckpt_args, metrics=metrics)
    finals = ["best.pt", "last.pt"]
    if averaged is not None:  # the last weights before averaging, to compare
        save_checkpoint(out_dir / "raw.pt", model, **ckpt_args, metrics={**metrics, **(log[-1] if log else {})})
        finals.append("raw.pt")
    if val_crops is not None:
        from ml.classification.artifact import load_classifier

        shape = val_features = None
        if cfg.shape_opinion:
            if progress:
                progress(0.99, "fitting the nucleus-shape opinion")
            shape = ShapeOpinion.fit(features_of_crops(eval_crops(train, cfg), cfg.margin), train.labels,
                                     len(classes), seed=cfg.seed)
            val_features = features_of_crops(val_crops, cfg.margin)
        for name in finals:
            clf = load_classifier(out_dir / name, device=device)
            vl = predict_logits(clf.model, val_crops, tta=cfg.tta, fade=fade)
            t = fit_temperature(vl, val.labels)
            extra, state = {}, None
            if shape is not None:  # the network's answer at temperature t, plus the shape model's
                opinion, vl, extra = shape.weighed(vl, val_features, val.labels, t)
                t = fit_temperature(vl, val.labels)
                state = opinion.to_state()
            vr = classification_report(val.labels, vl.argmax(1), classes)
            m = {**metrics, **clf.metrics, "val_accuracy": vr["accuracy"], "val_macro_f1": vr["macro_f1"],
                 "temperature": t, "val_ece_raw": ece(softmax(vl), val.labels),
                 "val_ece": ece(softmax(vl, t), val.labels), **extra}
            save_checkpoint(out_dir / name, clf.model, **ckpt_args, temperature=t, metrics=m, version=clf.version,
                            shape_opinion=state)
    if progress:
        progress(1.0, "trained")
    return out_dir
