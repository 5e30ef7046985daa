"""Reading smear images into RGB arrays, the one entry point every part of Leukolab uses."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Large scans are legitimate input; the webapp applies its own, stricter upload limit.
Image.MAX_IMAGE_PIXELS = 25_000 * 25_000


def load_image(path: str | os.PathLike | Path) -> np.ndarray:
    """Return the image at ``path`` as an ``HxWx3`` uint8 RGB array (EXIF orientation applied)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB",):
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                arr = (255.0 * (arr - arr.min()) / max(1.0, float(arr.max() - arr.min()))).astype(np.uint8)
                return np.stack([arr] * 3, axis=-1)
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8).copy()
