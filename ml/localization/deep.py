"""Deep WBC detector: a centre-heatmap (CenterNet-style) head on a small convolutional backbone.

The network predicts, on a grid of stride 8, one heatmap per class (the cell centres), the box
width and height (log scale, in grid cells) and the sub-cell offset of the centre. Decoding takes
the local maxima of the heatmaps. Boxes are regressed directly, so the detector learns where
annotators draw the box edge, not only where the nucleus is.

Backbones come from a registry: ``tiny`` (a plain conv net sized for CPU training from scratch)
or any timm model with ``features_only`` support, written ``timm:<name>`` (``pretrained`` is an
option; nothing is downloaded unless asked for).

A run directory (``train`` output) holds ``model.pt``: the weights plus everything inference
needs (architecture, classes, input scale, normalization, thresholds, tiling).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.boxes import Box
from ml.localization.scale import AUTO, detect_rescaled, parse_rescale, red_cell_rescale
from ml.localization.tiling import detect_tiled, nms

STRIDE = 8
_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    def deco(fn):
        _BACKBONES[name] = fn
        return fn
    return deco


def create_backbone(name: str, *, pretrained: bool = False) -> nn.Module:
    """A module returning feature maps at strides 8, 16 and 32, with ``.channels`` listing their widths."""
    if name.startswith("timm:"):
        return TimmBackbone(name[5:], pretrained=pretrained)
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(_BACKBONES))}, timm:<model>")
    return _BACKBONES[name]()


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_cbr(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(x + self.body(x))


class TinyBackbone(nn.Module):
    """About 0.9 M parameters; 0.4 GMAC for a 256x192 input."""

    def __init__(self, widths=(16, 32, 64, 96, 128)):
        super().__init__()
        w = widths
        self.s4 = nn.Sequential(_cbr(3, w[0], 2), _cbr(w[0], w[1], 2), _cbr(w[1], w[1]))
        self.s8 = nn.Sequential(_cbr(w[1], w[2], 2), _Res(w[2]))
        self.s16 = nn.Sequential(_cbr(w[2], w[3], 2), _Res(w[3]))
        self.s32 = nn.Sequential(_cbr(w[3], w[4], 2), _Res(w[4]), _Res(w[4]))
        self.channels = [w[2], w[3], w[4]]

    def forward(self, x):
        c8 = self.s8(self.s4(x))
        c16 = self.s16(c8)
        return [c8, c16, self.s32(c16)]


register_backbone("tiny")(TinyBackbone)
register_backbone("small")(lambda: TinyBackbone((24, 48, 96, 144, 192)))


class TimmBackbone(nn.Module):
    def __init__(self, name: str, *, pretrained: bool = False):
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True)
        except RuntimeError as exc:  # timm: "Unknown model (...)", or no features_only form of it
            raise ValueError(f"backbone timm:{name}: {exc}") from None
        red = self.body.feature_info.reduction()
        idx = [red.index(s) for s in (8, 16, 32)]
        self.idx = idx
        self.channels = [self.body.feature_info.channels()[i] for i in idx]

    def forward(self, x):
        feats = self.body(x)
        return [feats[i] for i in self.idx]


class CenterNet(nn.Module):
    """Backbone + a small top-down fusion to stride 8 + heatmap / size / offset heads."""

    def __init__(self, backbone: str, num_classes: int, *, width: int = 64, pretrained: bool = False):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained)
        c8, c16, c32 = self.backbone.channels
        self.lat32 = nn.Conv2d(c32, width, 1)
        self.lat16 = nn.Conv2d(c16, width, 1)
        self.lat8 = nn.Conv2d(c8, width, 1)
        self.fuse = _cbr(width, width)
        self.head = _cbr(width, width)
        self.hm = nn.Conv2d(width, num_classes, 1)
        self.reg = nn.Conv2d(width, 4, 1)  # offset x, offset y, log w, log h (grid cells)
        nn.init.constant_(self.hm.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(self.reg.weight)
        nn.init.constant_(self.reg.bias, 0.0)
        self.reg.bias.data[:2] = 0.5
        self.reg.bias.data[2:] = math.log(8.0)

    def forward(self, x):
        c8, c16, c32 = self.backbone(x)
        p = self.lat32(c32)
        p = F.interpolate(p, size=c16.shape[-2:], mode="nearest") + self.lat16(c16)
        p = F.interpolate(p, size=c8.shape[-2:], mode="nearest") + self.lat8(c8)
        h = self.head(self.fuse(p))
        return self.hm(h), self.reg(h)


# ---------------------------------------------------------------- targets and loss
def encode_targets(boxes: np.ndarray, classes: np.ndarray, num_classes: int, out_h: int, out_w: int,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap ``(C,H,W)``, regression ``(4,H,W)`` and regression weight ``(1,H,W)`` for boxes in input pixels."""
    hm = np.zeros((num_classes, out_h, out_w), np.float32)
    reg = np.zeros((4, out_h, out_w), np.float32)
    wt = np.zeros((1, out_h, out_w), np.float32)
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    # larger boxes first so a small box's regression target wins where they share a cell
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if len(boxes) else []
    for k in order:
        x0, y0, x1, y1 = boxes[k] / STRIDE
        bw, bh = x1 - x0, y1 - y0
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = int(min(max(cx, 0), out_w - 1)), int(min(max(cy, 0), out_h - 1))
        sx, sy = max(bw / 6, 0.5), max(bh / 6, 0.5)
        g = np.exp(-((xs - ix) ** 2 / (2 * sx * sx) + (ys - iy) ** 2 / (2 * sy * sy)))
        c = int(classes[k])
        hm[c] = np.maximum(hm[c], g)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                qx, qy = ix + dx, iy + dy
                if 0 <= qx < out_w and 0 <= qy < out_h:
                    w = 1.0 if dx == dy == 0 else 0.3
                    w *= 2.0 if c == 0 else 1.0  # WBC box edges matter most
                    reg[:, qy, qx] = (cx - qx, cy - qy, math.log(bw), math.log(bh))
                    wt[0, qy, qx] = w
    return hm, reg, wt


def centernet_loss(pred_hm, pred_reg, hm, reg, wt, class_weights) -> tuple[torch.Tensor, dict[str, float]]:
    """Penalty-reduced focal loss on the heatmaps plus weighted L1 on offset and log-size."""
    p = torch.sigmoid(pred_hm).clamp(1e-4, 1 - 1e-4)
    pos = hm.eq(1).float()
    neg = 1 - pos
    cw = class_weights.view(1, -1, 1, 1)
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos * cw).sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - hm) ** 4 * neg * cw).sum()
    n_pos = pos.sum().clamp(min=1.0)
    focal = (pos_loss + neg_loss) / n_pos
    l1 = (F.smooth_l1_loss(pred_reg, reg, reduction="none", beta=0.1) * wt).sum() / wt.sum().clamp(min=1.0)
    total = focal + l1
    return total, {"focal": float(focal.detach()), "reg": float(l1.detach())}


# ---------------------------------------------------------------- decoding
@torch.no_grad()
def decode(pred_hm: torch.Tensor, pred_reg: torch.Tensor, *, scale: float, classes: list[str],
           min_score: float = 0.05, top_k: int = 200) -> list[list[Box]]:
    """Boxes (in pixels of the image before its resize by ``scale``) for each item of a batch."""
    heat = torch.sigmoid(pred_hm)
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).float()
    b, c, h, w = heat.shape
    out = []
    for i in range(b):
        scores, idx = peaks[i].reshape(-1).topk(min(top_k, c * h * w))
        keep = scores >= min_score
        scores, idx = scores[keep], idx[keep]
        cls = idx // (h * w)
        yx = idx % (h * w)
        ys, xs = (yx // w), (yx % w)
        r = pred_reg[i][:, ys, xs]
        cx = (xs.float() + r[0]) * STRIDE / scale
        cy = (ys.float() + r[1]) * STRIDE / scale
        bw = torch.exp(r[2].clamp(-3, 6)) * STRIDE / scale
        bh = torch.exp(r[3].clamp(-3, 6)) * STRIDE / scale
        boxes = [Box(float(x - ww / 2), float(y - hh / 2), float(x + ww / 2), float(y + hh / 2),
                     classes[int(k)], float(s))
                 for x, y, ww, hh, k, s in zip(cx, cy, bw, bh, cls, scores)]
        out.append(nms(boxes, 0.5))
    return out


FLIPS = {1: [()], 2: [(), (3,)], 4: [(), (3,), (2,), (2, 3)]}


def forward_views(model: nn.Module, x: torch.Tensor, views: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap logits and box regression averaged over ``views`` mirrored copies of the input.

    1: the input as is; 2: also mirrored left-right; 4: also top-bottom and both. Each copy's
    output is mirrored back; a mirrored centre offset ``o`` (within its grid cell) is ``1 - o``.
    """
    if views not in FLIPS:
        raise ValueError(f"views must be one of {sorted(FLIPS)}, got {views}")
    hm_sum = reg_sum = None
    for dims in FLIPS[views]:
        hm, reg = model(x.flip(dims) if dims else x)
        hm, reg = hm.float(), reg.float()
        if dims:
            hm, reg = hm.flip(dims), reg.flip(dims).clone()
            if 3 in dims:
                reg[:, 0] = 1 - reg[:, 0]
            if 2 in dims:
                reg[:, 1] = 1 - reg[:, 1]
        hm_sum = hm if hm_sum is None else hm_sum + hm
        reg_sum = reg if reg_sum is None else reg_sum + reg
    return hm_sum / len(FLIPS[views]), reg_sum / len(FLIPS[views])


def preprocess(image: np.ndarray, scale: float, mean, std) -> torch.Tensor:
    """Resize an RGB uint8 image by ``scale``, pad to a multiple of 32, normalize; returns ``1x3xHxW``."""
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    x = (img.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if (ph, pw) != (nh, nw):
        x = np.pad(x, ((0, ph - nh), (0, pw - nw), (0, 0)))
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


# ---------------------------------------------------------------- artifact and localizer
def build_model(arch: dict) -> CenterNet:
    return CenterNet(arch["backbone"], len(arch["classes"]), width=arch.get("width", 64),
                     pretrained=arch.get("pretrained", False) and not arch.get("_loading", False))


def save_artifact(path: str | os.PathLike, model: CenterNet, meta: dict) -> None:
    """``meta``: ``arch`` (backbone, width, classes), ``scale``, ``mean``, ``std``, ``score_threshold``, ``tile``..."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # loads anywhere
    torch.save({"format": "leukolab-centernet-1", "meta": meta, "state_dict": state}, path)


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    path = Path(str(spec).removeprefix("deep:"))
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained deep detector here (expected a run directory with model.pt)")
    return path


class DeepLocalizer:
    """Loads a ``model.pt`` artifact; ``detect`` tiles large images and returns boxes in original pixels."""

    method = "deep"

    def __init__(self, checkpoint: str | os.PathLike, *, score_threshold: float | None = None,
                 num_threads: int | None = None, rescale: float | str = 1.0, device=None,
                 views: int | None = None):
        """``rescale`` multiplies the trained input scale: use about 2 when cells appear half as large
        as in the training images (lower magnification or camera resolution), 0.5 when twice as large,
        ``"auto"`` to judge the magnification from the cells found (:mod:`ml.localization.scale`).
        ``device``: where the network runs (:func:`ml.device.resolve_device`; default the GPU when
        there is one). ``views``: test-time mirrored views averaged (1, 2 or 4; default the
        checkpoint's own, 1 for checkpoints that keep none)."""
        from ml.device import resolve_device

        self.device = resolve_device(device)
        path = resolve_checkpoint(checkpoint)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            meta = blob["meta"]
        except Exception as exc:  # a corrupt or foreign file
            raise ValueError(f"{path}: not a Leukolab deep-detector checkpoint ({exc})") from None
        self.path = path
        self.meta = meta
        self.classes: list[str] = list(meta["arch"]["classes"])
        self.rescale = parse_rescale(rescale)
        self.trained_scale = float(meta["scale"])
        self.mean, self.std = meta["mean"], meta["std"]
        self.score_threshold = float(meta.get("score_threshold", 0.3) if score_threshold is None
                                     else score_threshold)
        self.views = int(meta.get("views", 1) if views is None else views)
        if self.views not in FLIPS:
            raise ValueError(f"views must be one of {sorted(FLIPS)}, got {self.views}")
        self.architecture = f"centernet-{meta['arch']['backbone'].replace(':', '-')}"
        self.version = f"{path.parent.name}-{int(path.stat().st_mtime)}"
        self.metrics = dict(meta.get("metrics", {}))
        self.tile = int(meta.get("tile", 2048))
        self.overlap = int(meta.get("overlap", 512))
        self.model = build_model({**meta["arch"], "_loading": True})
        self.model.load_state_dict(blob["state_dict"])
        self.model.to(self.device).eval()
        if num_threads:
            torch.set_num_threads(num_threads)

    @property
    def scale(self) -> float:
        """Input pixels per image pixel at this localizer's own rescale (1.0 when it is "auto")."""
        return self.trained_scale * (1.0 if self.rescale == AUTO else float(self.rescale))

    def _detect_tile(self, tile: np.ndarray, min_score: float, scale: float) -> list[Box]:
        x = preprocess(tile, scale, self.mean, self.std).to(self.device)
        with torch.inference_mode():
            hm, reg = (t.cpu() for t in forward_views(self.model, x, self.views))  # decoding: on the CPU
        h, w = tile.shape[:2]
        return [b.clip(w, h) for b in decode(hm, reg, scale=scale, classes=self.classes,
                                                min_score=min_score)[0]]

    def detect(self, image: np.ndarray, *, progress: Callable[[float], None] | None = None,
               min_score: float | None = None, labels: tuple[str, ...] | None = ("WBC",),
               rescale: float | str | None = None) -> list[Box]:
        """Boxes in original pixels, scores in [0, 1].

        By default only white cells (what ``ml.analyze`` classifies); ``labels=None`` returns every
        class the model knows (RBC and platelet counts). ``min_score`` overrides the trained threshold,
        ``rescale`` the localizer's own (see ``__init__``).
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
        thr = self.score_threshold if min_score is None else min_score

        def at(r: float) -> list[Box]:
            def one(tile: np.ndarray) -> list[Box]:
                found = self._detect_tile(tile, thr, self.trained_scale * r)
                return found if labels is None else [b for b in found if b.label in labels]

            return detect_tiled(image, one, tile=self.tile, overlap=self.overlap, progress=progress)

        rescale = self.rescale if rescale is None else parse_rescale(rescale)
        return detect_rescaled(at, image.shape, rescale,
                               counts=lambda b: b.label == "WBC" and b.score >= self.score_threshold,
                               red_cells=lambda side: red_cell_rescale(image, max_side=side))


def read_run_metrics(run_dir: str | os.PathLike) -> dict:
    p = Path(run_dir) / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}
