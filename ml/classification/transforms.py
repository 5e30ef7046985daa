"""Training augmentation that builds robustness to other labs, and the inference preprocessing.

Geometry (flips, rotation, scale and shift jitter of the box) is applied through the crop rule
itself, so an augmented crop is always a crop the rule could have produced from a slightly
different box. Photometry covers colour, stain (HED), blur, resolution, JPEG and noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ml.boxes import Box
from ml.classification.crop import CropRule, crop_window, surroundings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Ruifrok & Johnston stain matrix (rows: haematoxylin, eosin, DAB) in optical density.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


@dataclass
class AugmentConfig:
    strength: float = 1.0  # 0 disables photometric augmentation
    scale: tuple[float, float] = (0.8, 1.25)  # factor on the crop window side
    shift: float = 0.08  # fraction of the window side
    hed_sigma: float = 0.08
    # Staining intensity differs between labs (stain batch, time, pH): haematoxylin and eosin
    # amounts are each multiplied by a factor drawn log-uniformly in [2**-s, 2**s] (0: off).
    stain_scale: float = 0.0
    # Stains differ in colour too (absorption spectra of another dye batch or recipe): optical
    # density is mixed by I + N(0, s) per crop, which keeps the white background white (0: off).
    stain_colour: float = 0.0
    hue: float = 0.08  # fraction of the hue circle
    # contrast factor drawn in [1 - (1 - contrast_min) * strength, 1 + 0.3 * strength] (a washed-out
    # field: lamp, condenser, thin stain)
    contrast_min: float = 0.7
    grayscale_p: float = 0.15
    blur_p: float = 0.4
    lowres_p: float = 0.4
    jpeg_p: float = 0.3
    noise_p: float = 0.2


def geometric_crop(image: np.ndarray, box: Box, rule: CropRule, rng: np.random.Generator,
                   cfg: AugmentConfig) -> np.ndarray:
    """The crop rule applied to a jittered box, with a random rotation and flip, in one warp."""
    return geometric_crop_placed(image, box, rule, rng, cfg)[0]


def geometric_crop_placed(image: np.ndarray, box: Box, rule: CropRule, rng: np.random.Generator,
                          cfg: AugmentConfig) -> tuple[np.ndarray, tuple[float, float, float]]:
    """:func:`geometric_crop` (the same draws), and where the cell landed in it: ``(x, y, r)``, the box's
    centre in the crop's pixels and half its longer side at the crop's scale."""
    cx, cy, side = crop_window(box, rule.margin)
    bx, by = cx, cy
    side *= float(np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1]))))
    cx += rng.uniform(-cfg.shift, cfg.shift) * side
    cy += rng.uniform(-cfg.shift, cfg.shift) * side
    s = rule.out_size
    scale = s / side
    m = cv2.getRotationMatrix2D((cx, cy), float(rng.uniform(0, 360)), scale)
    m[0, 2] += s / 2.0 - cx
    m[1, 2] += s / 2.0 - cy
    if rng.random() < 0.5:
        m[0] = -m[0]
        m[0, 2] += s
    x, y = m @ np.array([bx, by, 1.0])
    placed = (float(x), float(y), 0.5 * max(box.width, box.height, 1.0) * scale)
    return cv2.warpAffine(image, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101), placed


def swap_surroundings(crops: list[np.ndarray], placed: list[tuple[float, float, float]], rng: np.random.Generator,
                      p: float, room: float) -> list[np.ndarray]:
    """Each crop, with probability ``p``, given the surroundings of another crop of the batch: the pixels
    beyond its cell's circle (``room`` times half the box's longer side) and beyond the other's cell's
    circle too (no part of another white cell is pasted in) are the other crop's. The white cell stays;
    what lies about it no longer tells its class."""
    n = len(crops)
    out = list(crops)
    if n < 2 or p <= 0:
        return out
    for j in np.flatnonzero(rng.random(n) < p):
        k = int(rng.integers(n - 1))
        k += k >= j
        size = crops[j].shape[0]
        w = (surroundings(size, placed[j], room) * surroundings(size, placed[k], room))[..., None]
        out[j] = np.rint(crops[j] * (1.0 - w) + crops[k] * w).astype(np.uint8)
    return out


def _optical_density(crop: np.ndarray) -> np.ndarray:
    """``Nx3`` optical density (Beer-Lambert) of the crop's pixels."""
    return -np.log((crop.reshape(-1, 3).astype(np.float32) + 1.0) / 256.0)


def _rgb_from_od(od: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).reshape(shape).astype(np.uint8)


def hed_jitter(crop: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    hed = _optical_density(crop) @ _HED_FROM_RGB.astype(np.float32)
    alpha = rng.uniform(1 - sigma * 3, 1 + sigma * 3, size=3).astype(np.float32)
    beta = rng.uniform(-sigma, sigma, size=3).astype(np.float32)
    hed = hed * alpha + beta
    return _rgb_from_od(hed @ _RGB_FROM_HED.astype(np.float32), crop.shape)


def stain_amounts(crop: np.ndarray, h: float, e: float) -> np.ndarray:
    """The crop as if stained with ``h`` times the haematoxylin and ``e`` times the eosin."""
    hed = _optical_density(crop) @ _HED_FROM_RGB.astype(np.float32)
    hed *= np.array([h, e, 1.0], np.float32)
    return _rgb_from_od(np.maximum(hed @ _RGB_FROM_HED.astype(np.float32), 0.0), crop.shape)


def stain_colours(crop: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """The crop with its optical density mixed by the 3x3 matrix ``mix`` (Beer-Lambert: what absorbs
    now absorbs other wavelengths; unstained background stays as it is)."""
    return _rgb_from_od(np.maximum(_optical_density(crop) @ mix.astype(np.float32), 0.0), crop.shape)


def photometric(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    k = cfg.strength
    if k <= 0:
        return crop
    out = crop
    if cfg.stain_scale > 0:
        h, e = 2.0 ** rng.uniform(-cfg.stain_scale * k, cfg.stain_scale * k, size=2)
        out = stain_amounts(out, float(h), float(e))
    if cfg.stain_colour > 0:
        out = stain_colours(out, np.eye(3) + rng.normal(0, cfg.stain_colour * k, (3, 3)))
    out = hed_jitter(out, rng, cfg.hed_sigma * k)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue, cfg.hue) * 180 * k) % 180
    hsv[..., 1] *= rng.uniform(1 - 0.5 * k, 1 + 0.4 * k)
    out = cv2.cvtColor(np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2RGB)
    f = out.astype(np.float32)
    f = (f - f.mean()) * rng.uniform(1 - (1 - cfg.contrast_min) * k, 1 + 0.3 * k) + f.mean() + rng.uniform(-25, 25) * k
    f *= rng.uniform(1 - 0.1 * k, 1 + 0.1 * k, size=3)  # per-channel gain: white balance
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < cfg.grayscale_p * k:
        g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(g[..., None], 3, axis=2)
    if rng.random() < cfg.lowres_p * k:
        s = out.shape[0]
        small = max(8, int(s * rng.uniform(0.35, 0.8)))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (s, s),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < cfg.blur_p * k:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.5))
    if rng.random() < cfg.noise_p * k:
        out = np.clip(out + rng.normal(0, rng.uniform(2, 10), out.shape), 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg_p * k:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(20, 90))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def random_convolution(x: torch.Tensor, rng: np.random.Generator, p: float,
                       sizes: tuple[int, ...] = (1, 3, 5)) -> torch.Tensor:
    """Random convolutions (Xu et al., "Robust and generalizable visual representation learning via
    random convolutions", ICLR 2021): each crop of the normalized ``Nx3xHxW`` batch is, with
    probability ``p``, filtered by a fresh random ``k x k`` convolution mixing its three channels
    (weights ~ N(0, 1 / (3 k^2)), ``k`` from ``sizes``; reflected borders), rescaled to the crop's
    own mean and spread, and blended with the crop by a weight drawn in [0, 1]. Colour and fine
    texture become unreliable, so the network leans on shape: the nucleus's outline and lobes,
    the cell's size against its nucleus."""
    chosen = np.flatnonzero(rng.random(len(x)) < p)
    if p <= 0 or not len(chosen):
        return x
    out = x.clone()
    for i in chosen:
        k = int(rng.choice(sizes))
        w = torch.from_numpy(rng.normal(0.0, 1.0 / np.sqrt(3 * k * k), (3, 3, k, k)).astype(np.float32))
        xi = x[i:i + 1]
        y = F.conv2d(F.pad(xi, (k // 2,) * 4, mode="reflect") if k > 1 else xi, w)
        y = (y - y.mean()) / y.std().clamp_min(1e-6) * xi.std() + xi.mean()
        a = float(rng.uniform())
        out[i] = a * xi[0] + (1.0 - a) * y[0]
    return out


def amplitude_mix(x: torch.Tensor, rng: np.random.Generator, p: float, eta: float = 1.0) -> torch.Tensor:
    """Fourier amplitude mixing (Xu et al., "A Fourier-based framework for domain generalization",
    CVPR 2021): each crop of the normalized ``Nx3xHxW`` batch is, with probability ``p``, given an
    amplitude spectrum blended with another crop's of the batch (weight drawn in [0, ``eta``]),
    per channel, while it keeps its own phase. The amplitude carries what differs between labs
    (colour balance, contrast, sharpness, noise); the phase carries where the edges are: the
    nucleus's outline and lobes, the granules' positions."""
    chosen = np.flatnonzero(rng.random(len(x)) < p)
    if p <= 0 or not len(chosen) or len(x) < 2:
        return x
    others = (chosen + rng.integers(1, len(x), len(chosen))) % len(x)  # never the crop itself
    lam = torch.from_numpy(rng.uniform(0.0, eta, len(chosen)).astype(np.float32)).view(-1, 1, 1, 1)
    f = torch.fft.fft2(x[chosen].float())
    amp = (1.0 - lam) * f.abs() + lam * torch.fft.fft2(x[others].float()).abs()
    out = x.clone()
    out[chosen] = torch.fft.ifft2(torch.polar(amp, f.angle())).real.to(x.dtype)
    return out


def to_tensor(crops: np.ndarray | list[np.ndarray], mean=IMAGENET_MEAN, std=IMAGENET_STD,
              fade: np.ndarray | None = None) -> torch.Tensor:
    """``NxHxWx3`` uint8 crops to a normalized float ``Nx3xHxW`` tensor; ``fade``: the crop rule's
    context weights (``crop.context_weights``, ``HxW``, or ``Nx1xHxW`` one per crop), each pixel's distance
    from white multiplied by its weight."""
    arr = np.ascontiguousarray(np.stack(crops) if isinstance(crops, list) else crops)
    t = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    if fade is not None:
        t = 1.0 - (1.0 - t) * torch.from_numpy(fade)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (t - m) / s
