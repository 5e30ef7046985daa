"""Reading smear images into RGB arrays, the one entry point every part of Leukolab uses."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps

# Large scans are legitimate input; the webapp applies its own, stricter upload limit.
Image.MAX_IMAGE_PIXELS = 25_000 * 25_000
# Rows copied from the decoded image into the array at a time: the copy then never holds a second
# whole image (a 20000x20000 scan is 1.2 GB as an array).
STRIP_ROWS = 256
log = logging.getLogger(__name__)


def load_image(path: str | os.PathLike | Path | BinaryIO) -> np.ndarray:
    """Return the image at ``path`` (or an open binary file) as an ``HxWx3`` uint8 RGB array (EXIF
    orientation applied), in sRGB where the file carries a colour profile of its own (a camera's Adobe RGB,
    a scanner's calibration, a CMYK file's ink), so that a stain's colours are the same whatever profile
    the file was saved in.

    Memory: the decoded image and the array it is copied into, no more (a strip at a time), so a
    scan needs about twice its array's size while it is read, and its array's size after."""
    with Image.open(path) as im:
        name = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "an image")
        if im.format == "TIFF" and getattr(im, "n_frames", 1) > 1:
            log.warning("%s: a TIFF of %d pages; only its first page is read", name, im.n_frames)
        im = _upright(im)
        to_srgb = _srgb_transform(im, name)
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
            # transparent parts (e.g. outside a round field of view) as the bright background, not black
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return _rgb_array(Image.alpha_composite(white, rgba).convert("RGB"), to_srgb)
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit, 32-bit and floating-point grey, stretched
            arr = np.asarray(im, dtype=np.float32)
            arr = (255.0 * (arr - arr.min()) / max(1.0, float(arr.max() - arr.min()))).astype(np.uint8)
            return np.stack([arr] * 3, axis=-1)
        if im.mode not in ("RGB", "CMYK") or (im.mode == "CMYK" and to_srgb is None):
            im = im.convert("RGB")
        return _rgb_array(im, to_srgb)


def read_image(path: str | os.PathLike | Path) -> np.ndarray:
    """:func:`load_image` of a file, for command lines and datasets: any failure to read it is a
    ``ValueError`` whose message starts with the file's name."""
    try:
        image = load_image(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such image") from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # Pillow raises several types for files it cannot decode
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    if is_grey(image):
        log.warning("%s: a grey image; Leukolab finds white cells by the stain's colours and classifies them in "
                    "colour: the classical method finds none, and the deep detector's and the classifier's answers "
                    "on it are unreliable", path)
    return image


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB image has no colour at all (judged on a sparse grid of its pixels)."""
    h, w = image.shape[:2]
    step = max(8, int(np.ceil(np.sqrt(h * w / 1e6))))
    thumb = image[::step, ::step].astype(np.int16)
    return bool(thumb.size) and int(np.abs(thumb - thumb[..., :1]).max()) <= 2


def image_size(path: str | os.PathLike | Path) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` as :func:`load_image` returns it (EXIF orientation
    applied), from its header only; failures as in :func:`read_image`."""
    try:
        with Image.open(path) as im:
            return upright_size(im)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such image") from None
    except Exception as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None


def upright_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an open image once turned as its EXIF orientation says (the size of
    :func:`load_image`'s array), read from its header."""
    w, h = im.size
    if im.format == "PNG" and "exif" not in im.info:  # none in the header (Pillow would decode the pixels to look further)
        return w, h
    if im.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # a quarter turn
        return h, w
    return w, h


def _upright(im: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; the image itself where it needs no turn
    (``ImageOps.exif_transpose`` would copy it whole even then)."""
    if im.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        return ImageOps.exif_transpose(im)
    return im


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _srgb_transform(im: Image.Image, name) -> ImageCms.ImageCmsTransform | None:
    """The conversion of the image's pixels from its embedded ICC profile to sRGB; None where it has no
    profile, its profile is sRGB already, or the profile does not fit its pixels (then they are read as
    sRGB, as a browser would show them, with a warning)."""
    icc = im.info.get("icc_profile")
    if not icc:
        return None
    mode = "RGB" if im.mode in ("RGB", "RGBA", "RGBa", "P", "PA") else im.mode
    if mode not in ("RGB", "CMYK"):  # grey and the rest: no colour to keep
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if ImageCms.getProfileDescription(source).strip().lower().startswith("srgb"):
            return None
        space = source.profile.xcolor_space.strip()
        if space != mode:
            raise ValueError(f"a {space} profile on {im.mode} pixels")
        return ImageCms.buildTransform(source, _SRGB, mode, "RGB")
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:
        log.warning("%s: its colour profile is not used (%s); its colours are read as sRGB", name, exc)
        return None


def _rgb_array(im: Image.Image, to_srgb: ImageCms.ImageCmsTransform | None = None) -> np.ndarray:
    """An RGB image's pixels (a CMYK one's, with ``to_srgb``) as a new, writable ``HxWx3`` uint8 array,
    converted to sRGB by ``to_srgb`` where given, :data:`STRIP_ROWS` rows at a time (``np.asarray`` of a
    whole image goes through a bytes copy of it first, and a whole-image conversion would hold a second
    image)."""
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    im.load()
    for y in range(0, h, STRIP_ROWS):
        strip = im.crop((0, y, w, min(h, y + STRIP_ROWS)))
        if to_srgb is not None:
            strip = ImageCms.applyTransform(strip, to_srgb)
        out[y:y + STRIP_ROWS] = np.asarray(strip)
    return out
