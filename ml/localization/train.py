"""Training the deep detector from box annotations (any format :func:`load_dataset` reads).

``train_detector`` is a plain function: it writes ``config.json``, ``model.pt`` (best by
validation score), ``metrics.json``, ``history.json`` and plots into a run directory.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ml.boxes import Box
from ml.device import free_cores, resolve_device
from ml.imageio import read_image
from ml.localization.deep import STRIDE, CenterNet, build_model, centernet_loss, decode, encode_targets, save_artifact
from ml.localization.formats import Sample
from ml.localization.metrics import detection_metrics
from ml.prefetch import prefetched

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    backbone: str = "tiny"
    pretrained: bool = False
    width: int = 64
    classes: tuple[str, ...] = ("WBC", "RBC", "Platelets")
    class_weights: tuple[float, ...] = (1.0, 0.3, 0.5)  # RBC boxes are incomplete in BCCD: trust them less
    scale: float = 0.4  # input pixels per original pixel
    img_size: int = 256  # square training crop, in input pixels
    epochs: int = 120  # rule 45 (bench/localization.md): the wider scale range below needs them
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    # training crops resized by a factor from this range (log-uniform): up to twice the trained size, so
    # that fields of a higher magnification are found whole (rules 42-45, bench/localization.md)
    scale_jitter: tuple[float, float] = (0.7, 2.0)
    colour_jitter: float = 1.0  # 0 disables the colour/stain augmentation
    val_every: int = 5
    views: int = 4  # mirrored views averaged at inference (1, 2, 4), kept in the checkpoint; the threshold is chosen with them
    ema: float = 0.0  # exponential moving average of the weights, e.g. 0.998 (0 disables); evaluated and saved
    seed: int = 0
    num_threads: int = 2
    device: str = "auto"  # auto (a GPU when torch sees one), cpu, cuda or cuda:N (ml.device)
    workers: int | None = None  # augmentation threads (None: 0 on a CPU, the free cores up to 8 on a GPU)
    max_steps: int | None = None  # stop early (tests)
    time_budget_s: float | None = None  # stop after this many seconds of training (best checkpoint kept)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    tile: int = 2048
    overlap: int = 512
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- augmentation
def colour_augment(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Stain, white balance, brightness, contrast, blur and noise changes of a uint8 RGB image."""
    if strength <= 0:
        return img
    x = img.astype(np.float32)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12) * strength) % 180
    hsv[..., 1] *= 1 + rng.uniform(-0.4, 0.4) * strength
    x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    x *= 1 + rng.uniform(-0.12, 0.12, size=3) * strength  # white balance
    mean = x.mean()
    x = (x - mean) * (1 + rng.uniform(-0.3, 0.3) * strength) + mean * (1 + rng.uniform(-0.2, 0.2) * strength)
    x = np.clip(x, 0, 255)
    gamma = math.exp(rng.uniform(-0.3, 0.3) * strength)
    x = 255.0 * (x / 255.0) ** gamma
    if rng.random() < 0.3 * strength:
        k = int(rng.choice([3, 5]))
        x = cv2.GaussianBlur(x, (k, k), 0)
    if rng.random() < 0.3 * strength:
        x = x + rng.normal(0, rng.uniform(2, 8), size=x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def geometric_augment(img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, scale: float,
                      size: int, jitter: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random scale, flips, 90-degree turn and a ``size x size`` crop (padded with the image's mean colour).

    Returns the crop, its boxes (input pixels) and a mask of the boxes kept (mostly visible).
    """
    s = scale * math.exp(rng.uniform(math.log(jitter[0]), math.log(jitter[1])))
    h, w = img.shape[:2]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    b = boxes.astype(np.float32) * np.float32([nw / w, nh / h, nw / w, nh / h])
    if rng.random() < 0.5:
        img = img[:, ::-1]
        b = np.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], 1)
    if rng.random() < 0.5:
        img = img[::-1]
        b = np.stack([b[:, 0], nh - b[:, 3], b[:, 2], nh - b[:, 1]], 1)
    if rng.random() < 0.5:
        img = img.transpose(1, 0, 2)
        b = b[:, [1, 0, 3, 2]]
        nh, nw = nw, nh
    fill = img.reshape(-1, 3).mean(0)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = fill.astype(np.uint8)
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    sx0, sy0 = max(0, -ox), max(0, -oy)
    dx0, dy0 = max(0, ox), max(0, oy)
    cw, ch = min(nw - sx0, size - dx0), min(nh - sy0, size - dy0)
    canvas[dy0:dy0 + ch, dx0:dx0 + cw] = img[sy0:sy0 + ch, sx0:sx0 + cw]
    b = b + np.float32([ox, oy, ox, oy])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = np.clip(b, 0, size)
    vis = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep = vis >= 0.5 * np.maximum(area, 1e-6)
    return canvas, c, keep


class BoxDataset(torch.utils.data.Dataset):
    def __init__(self, samples: Sequence[Sample], cfg: TrainConfig, *, seed: int = 0):
        self.cfg = cfg
        self.images = [read_image(s.image_path) for s in samples]
        self.boxes, self.labels = [], []
        for s in samples:
            kept = [b for b in s.annotation.boxes if b.label in cfg.classes]
            self.boxes.append(np.array([b.as_list() for b in kept], np.float32).reshape(-1, 4))
            self.labels.append(np.array([cfg.classes.index(b.label) for b in kept], np.int64))
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.sample(i, self.rng)

    def sample(self, i: int, rng: np.random.Generator):
        """Field ``i`` augmented with ``rng``: the input and its heatmap, offset and weight targets."""
        cfg = self.cfg
        img, b, keep = geometric_augment(self.images[i], self.boxes[i], rng, cfg.scale, cfg.img_size,
                                         cfg.scale_jitter)
        img = colour_augment(img, rng, cfg.colour_jitter)
        out = cfg.img_size // STRIDE
        hm, reg, wt = encode_targets(b[keep], self.labels[i][keep], len(cfg.classes), out, out)
        x = (img.astype(np.float32) / 255.0 - np.float32(cfg.mean)) / np.float32(cfg.std)
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(hm),
                torch.from_numpy(reg), torch.from_numpy(wt))


class ThreadedBatches:
    """The batches of a :class:`BoxDataset`, prepared by ``workers`` threads ahead of the model (for a
    GPU, which would otherwise wait for augmentation; :mod:`ml.prefetch`). Epoch ``e`` is shuffled by
    its own generator and batch ``b`` augmented by another, seeded by (seed, e, b), so the batches do
    not depend on the number of threads."""

    def __init__(self, ds: BoxDataset, batch_size: int, seed: int, workers: int, drop_last: bool):
        self.ds, self.bs, self.seed, self.workers = ds, batch_size, seed, workers
        self.n = len(ds) // batch_size if drop_last else -(-len(ds) // batch_size)
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def make(self, epoch: int, order: np.ndarray, b: int):
        rng = np.random.default_rng([self.seed, epoch, b])
        items = [self.ds.sample(int(i), rng) for i in order[b * self.bs:(b + 1) * self.bs]]
        return tuple(torch.stack(t) for t in zip(*items))

    def __iter__(self):
        from functools import partial

        self.epoch += 1
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.ds))
        return prefetched(partial(self.make, self.epoch, order), self.n, self.workers)


# ---------------------------------------------------------------- evaluation during training
def predict_samples(model: CenterNet, samples: Sequence[Sample], cfg: TrainConfig, *,
                    min_score: float = 0.05, images: Sequence[np.ndarray] | None = None) -> list[list[Box]]:
    from ml.localization.deep import forward_views, preprocess

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for k, s in enumerate(samples):
            img = images[k] if images is not None else read_image(s.image_path)
            x = preprocess(img, cfg.scale, cfg.mean, cfg.std).to(device)
            hm, reg = (t.cpu() for t in forward_views(model, x, cfg.views))
            h, w = img.shape[:2]
            out.append([b.clip(w, h) for b in decode(hm, reg, scale=cfg.scale, classes=list(cfg.classes),
                                                        min_score=min_score)[0]])
    return out


def choose_threshold(gts, preds, label: str = "WBC") -> float:
    """The score threshold with the best F1 at IoU 0.5 (ties: the lower threshold, for recall)."""
    from ml.localization.metrics import precision_recall

    best, best_t = -1.0, 0.3
    for t in np.round(np.arange(0.05, 0.9, 0.025), 3):
        kept = [[b for b in p if b.label == label and b.score >= t] for p in preds]
        p, r = precision_recall(gts, kept)
        f1 = 2 * p * r / max(p + r, 1e-9)
        if f1 > best + 1e-9:
            best, best_t = f1, float(t)
    return best_t


def _val_metrics(gts, preds) -> dict:
    wbc = [[b for b in p if b.label == "WBC"] for p in preds]
    return detection_metrics(gts, wbc, score_threshold=0.3)


def train_detector(train: Sequence[Sample], val: Sequence[Sample], out_dir: str | Path, cfg: TrainConfig,
                   *, progress: bool = True) -> dict:
    """Train, keep the best checkpoint by validation WBC (AP50 + mean IoU), write the run directory.

    Uses ``cfg.num_threads`` torch threads while it runs and restores the previous setting after.
    """
    threads = torch.get_num_threads()
    try:
        return _train_detector(train, val, out_dir, cfg, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train_detector(train, val, out_dir, cfg: TrainConfig, *, progress: bool) -> dict:
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    (out / "config.json").write_text(json.dumps({"method": "deep", **asdict(cfg)}, indent=2, default=repr))
    arch = {"backbone": cfg.backbone, "width": cfg.width, "classes": list(cfg.classes),
            "pretrained": cfg.pretrained}
    device = resolve_device(cfg.device)
    on_gpu = device.type == "cuda"
    fmt = torch.channels_last if on_gpu else torch.contiguous_format  # the CPU path as it always was
    model = build_model(arch).to(device).to(memory_format=fmt)
    ema = build_model({**arch, "_loading": True}).to(device) if cfg.ema > 0 else model
    if cfg.ema > 0:
        ema.load_state_dict(model.state_dict())
        for p in ema.parameters():
            p.requires_grad_(False)
    ds = BoxDataset(train, cfg, seed=cfg.seed)
    workers = cfg.workers if cfg.workers is not None else (min(8, free_cores()) if on_gpu else 0)
    drop_last = len(ds) > cfg.batch_size
    if workers > 0:
        loader = ThreadedBatches(ds, cfg.batch_size, cfg.seed, workers, drop_last)
    else:  # augmentation in the training loop, one generator for the whole run
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last)
    steps_per_epoch = max(1, len(loader))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = min(100, total_steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, total_steps) / total_steps)))
    cw = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
    val_images = [read_image(s.image_path) for s in val]
    val_gts = [s.annotation.of_label("WBC") for s in val]
    history, best_score, best = [], -1.0, None
    meta = {"arch": arch, "scale": cfg.scale, "mean": list(cfg.mean), "std": list(cfg.std),
            "score_threshold": 0.3, "tile": cfg.tile, "overlap": cfg.overlap, "stride": STRIDE,
            "views": cfg.views}
    t0 = time.time()
    step = 0
    bar = tqdm(total=total_steps, desc="train", disable=not progress, mininterval=5)
    for epoch in range(1, epochs + 1):
        model.train()
        sums = {"loss": 0.0, "focal": 0.0, "reg": 0.0}
        n = 0
        for x, hm, reg, wt in loader:
            x = x.to(device, non_blocking=on_gpu).contiguous(memory_format=fmt)
            hm, reg, wt = (t.to(device, non_blocking=on_gpu) for t in (hm, reg, wt))
            # mixed precision (bfloat16) for the network on a GPU; the loss in full precision
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                pred_hm, pred_reg = model(x)
            loss, parts = centernet_loss(pred_hm.float(), pred_reg.float(), hm, reg, wt, cw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            step += 1
            if cfg.ema > 0:
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for pe, pm in zip(ema.state_dict().values(), model.state_dict().values()):
                        if pe.dtype.is_floating_point:
                            pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
                        else:
                            pe.copy_(pm)
            n += 1
            sums["loss"] += float(loss.detach())
            sums["focal"] += parts["focal"]
            sums["reg"] += parts["reg"]
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if step >= total_steps or (cfg.time_budget_s and time.time() - t0 > cfg.time_budget_s):
                total_steps = step
                break
        if epoch == 1 and cfg.time_budget_s:  # fit the schedule (cosine decay) into the budget
            fits = int(cfg.time_budget_s / max(time.time() - t0, 1e-3))
            total_steps = max(step, min(total_steps, fits * steps_per_epoch))
        rec = {"epoch": epoch, "step": step, "seconds": round(time.time() - t0, 1),
               **{k: v / max(n, 1) for k, v in sums.items()}}
        last = step >= total_steps
        if val and (epoch % cfg.val_every == 0 or last):
            preds = predict_samples(ema, val, cfg, images=val_images)
            m = _val_metrics(val_gts, preds)
            rec.update({f"val_{k}": v for k, v in m.items()})
            score = m["ap50"] + m["mean_iou"]
            if score > best_score:
                best_score = score
                best = {k: v.detach().clone() for k, v in ema.state_dict().items()}
                save_artifact(out / "model.pt", ema, meta)
            log.info("epoch %d: %s", epoch, rec)
            if progress:
                bar.write(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}))
        history.append(rec)
        callback = cfg.extra.get("progress")
        if callable(callback):
            callback(min(1.0, step / max(total_steps, 1)), f"epoch {epoch} loss {rec['loss']:.3f}")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if last:
            break
    bar.close()
    model = ema
    if best is None:
        save_artifact(out / "model.pt", model, meta)
    else:
        model.load_state_dict(best)
    train_seconds = time.time() - t0
    # operating threshold chosen on the validation fields (never on test fields)
    if val:
        preds = predict_samples(model, val, cfg, images=val_images)
        meta["score_threshold"] = choose_threshold(val_gts, preds)
        save_artifact(out / "model.pt", model, meta)
    summary = {"train_seconds": round(train_seconds, 1), "steps": step, "epochs": epoch,
               "device": str(device), "mixed_precision": on_gpu,
               "n_train": len(train), "n_val": len(val), "score_threshold": meta["score_threshold"],
               "final_loss": history[-1]["loss"] if history else None,
               "first_loss": history[0]["loss"] if history else None}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    meta["metrics"] = summary
    save_artifact(out / "model.pt", model, meta)
    _plot_history(history, out / "loss.png")
    return summary


def _plot_history(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label="train loss")
    v = [h for h in history if "val_mean_iou" in h]
    if v:
        ax2 = ax.twinx()
        ax2.plot([h["epoch"] for h in v], [h["val_mean_iou"] for h in v], "g.-", label="val mean IoU")
        ax2.plot([h["epoch"] for h in v], [h["val_ap50"] for h in v], "r.-", label="val AP50")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="center right", fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_default(data_dir: str | Path | None, out: str | Path, *, time_budget_s: float | None = None,
                  progress=None, epochs: int | None = None, part: str = "all",
                  extra: Sequence[str | Path] = (), **options) -> Path:
    """Train the default deep localizer on an annotated folder (BCCD when ``data_dir`` is None).

    ``part``: the part of the folder's fixed split to train on (``train`` keeps its test fields out, to
    score on); ``extra``: more annotated folders (e.g. a lab's fields as the webapp exports them), all
    of their fields trained on. Every 10th field validates; ``time_budget_s`` bounds training.
    ``progress(fraction, message)`` is called once per epoch; other ``options`` are :class:`TrainConfig`
    fields. Returns the run directory (``model.pt`` inside).
    """
    from ml.localization.data import bccd_root, load_dataset, load_split, train_val_split

    samples = load_split(data_dir or bccd_root(), part)
    for folder in extra:
        samples += load_dataset(folder)
    fit, val = train_val_split(samples)
    cfg = TrainConfig(time_budget_s=time_budget_s, **({"epochs": epochs} if epochs else {}), **options)
    cfg.extra["progress"] = progress
    train_detector(fit, val, out, cfg, progress=False)
    return Path(out)
