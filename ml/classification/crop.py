"""The one cell-crop rule shared by training and inference.

A crop is a square centred on the cell's box, whose side is the box's longer side grown by
``margin`` on each side, resized to ``out_size``. Pixels outside the image are filled by
replicating the border, so cells at the edge of a field keep a natural background.
The rule's parameters travel with every model artifact (see :class:`CropRule`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ml.boxes import Box


# Room left about the cell where the context fades (``CropRule.fade``): the circle's radius is half the
# box's longer side times this, so a cell's membrane and a box a little tight keep their pixels.
FADE_ROOM = 1.15


@dataclass(frozen=True)
class CropRule:
    margin: float = 0.2  # fraction of the box's longer side added on each side
    out_size: int = 64
    # What the network sees of the cell's surroundings: outside a circle about the crop's centre (half the
    # box's longer side, times FADE_ROOM), each pixel is moved this fraction of the way to white, over a
    # soft edge (0: the crop as cut; 1: white). Another lab's red cells and background (their density,
    # colour and stain) then count for less against the white cell itself.
    fade: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def surroundings(size: int, placed: tuple[float, float, float], room: float = FADE_ROOM) -> np.ndarray:
    """``size x size`` weights of a cell's surroundings in a crop: 0 within the circle of radius ``room``
    times ``r`` about ``(x, y)`` (``placed``: the box's centre in the crop's pixels and half its longer
    side at the crop's scale), 1 beyond the circle's soft edge."""
    x, y, r = placed
    radius = room * r
    edge = max(1.0, 0.15 * radius)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return np.clip((np.hypot(xx - x, yy - y) - radius) / edge, 0.0, 1.0)


def context_weights(rule: CropRule) -> np.ndarray | None:
    """``out_size x out_size`` weights of each pixel's distance from white in what the network sees
    (``rule.fade``): 1 within the cell's circle, ``1 - fade`` beyond its soft edge; None without fading."""
    if rule.fade <= 0:
        return None
    s = rule.out_size
    around = surroundings(s, (s / 2.0, s / 2.0, 0.5 * s / (1.0 + 2.0 * rule.margin)))
    return (1.0 - rule.fade * around).astype(np.float32)


def crop_window(box: Box, margin: float) -> tuple[float, float, float]:
    """Return ``(cx, cy, side)`` of the square window the rule cuts around ``box``."""
    cx, cy = (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0
    side = max(box.width, box.height, 1.0) * (1.0 + 2.0 * margin)
    return cx, cy, side


def cell_crop(image: np.ndarray, box: Box, margin: float = 0.2, out_size: int = 64) -> np.ndarray:
    """Cut the square crop of ``box`` from an ``HxWx3`` uint8 image, resized to ``out_size``."""
    cx, cy, side = crop_window(box, margin)
    scale = out_size / side
    # Affine map from the image to the crop: one warp does the crop, the padding and the resize.
    m = np.array([[scale, 0.0, out_size / 2.0 - cx * scale], [0.0, scale, out_size / 2.0 - cy * scale]])
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    if scale < 0.5:
        # Shrinking a lot: blur first so the crop is not aliased (INTER_AREA is ignored by warpAffine).
        sigma = 0.5 / scale
        k = int(2 * round(2 * sigma) + 1)
        x0, y0 = int(max(0, cx - side / 2 - k)), int(max(0, cy - side / 2 - k))
        x1, y1 = int(min(image.shape[1], cx + side / 2 + k)), int(min(image.shape[0], cy + side / 2 + k))
        if x1 > x0 and y1 > y0:
            region = cv2.GaussianBlur(np.ascontiguousarray(image[y0:y1, x0:x1]), (k, k), sigma)
            m[0, 2] += x0 * scale
            m[1, 2] += y0 * scale
            image = region
    return cv2.warpAffine(
        np.ascontiguousarray(image), m, (out_size, out_size), flags=interp, borderMode=cv2.BORDER_REPLICATE
    )


def crop_rule_from_dict(d: dict | None) -> CropRule:
    d = d or {}
    return CropRule(margin=float(d.get("margin", 0.2)), out_size=int(d.get("out_size", 64)),
                    fade=float(d.get("fade", 0.0)))
