"""Colour normalization applied identically in training and inference.

``background`` white-balances each crop on its own background (the brightest pixels: plasma
between the cells), which removes the colour cast of another lab's lamp, camera and stain base;
``reinhard`` and ``macenko`` map a crop towards fixed target statistics.
``normalize(crop, method)`` is the only entry point.
"""
from __future__ import annotations

import cv2
import numpy as np

from ml import colour

METHODS = ("none", "background", "reinhard", "macenko")

# Target LAB statistics (OpenCV 8-bit LAB) of a typical May-Grünwald-Giemsa crop.
_REINHARD_MEAN = np.array([170.0, 145.0, 120.0])
_REINHARD_STD = np.array([40.0, 12.0, 12.0])

# Reference H&E-like stain vectors (optical density) and max concentrations for Macenko.
_MACENKO_REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
_MACENKO_MAXC = np.array([1.9705, 1.0308])


def reinhard(crop: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    mean = lab.reshape(-1, 3).mean(0)
    std = lab.reshape(-1, 3).std(0) + 1e-3
    out = (lab - mean) / std * _REINHARD_STD + _REINHARD_MEAN
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def macenko(crop: np.ndarray, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15) -> np.ndarray:
    """Macenko et al. (2009): estimate the two stain vectors by SVD of optical density, remap."""
    h, w = crop.shape[:2]
    od = -np.log((crop.reshape(-1, 3).astype(np.float64) + 1.0) / io)
    od_hat = od[np.all(od > beta, axis=1)]
    if len(od_hat) < 10:
        return crop.copy()
    _, eigvecs = np.linalg.eigh(np.cov(od_hat.T))
    plane = eigvecs[:, 1:3]
    proj = od_hat @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v1, v2], 1) if v1[0] > v2[0] else np.stack([v2, v1], 1)
    conc, *_ = np.linalg.lstsq(stains, od.T, rcond=None)
    maxc = np.percentile(conc, 99, axis=1) + 1e-6
    conc = conc * (_MACENKO_MAXC / maxc)[:, None]
    out = io * np.exp(-_MACENKO_REF @ conc)
    return np.clip(out.T.reshape(h, w, 3), 0, 255).astype(np.uint8)


def normalize(crop: np.ndarray, method: str = "none") -> np.ndarray:
    if method in (None, "", "none"):
        return crop
    if method == "background":
        return colour.white_balance(crop)
    if method == "reinhard":
        return reinhard(crop)
    if method == "macenko":
        return macenko(crop)
    raise ValueError(f"unknown stain normalization {method!r}; known: {', '.join(METHODS)}")
