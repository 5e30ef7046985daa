"""Upload checks: real image content of an allowed format, in colour, a size limit and a pixel limit."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils.text import get_valid_filename
from PIL import Image, UnidentifiedImageError

from ml.imageio import is_grey, upright_size
from webapp.common.exceptions import ApplicationError

ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF"}
_FULL_DECODE_MAX_PIXELS = 64_000_000  # decode small images fully so truncated files are caught


@dataclass
class CheckedImage:
    upload: UploadedFile
    filename: str
    format: str
    width: int
    height: int
    size_bytes: int
    sha256: str


def clean_filename(name: str) -> str:
    base = (name or "image").replace("\\", "/").rsplit("/", 1)[-1]
    try:
        cleaned = get_valid_filename(base)
    except Exception:  # noqa: BLE001 - get_valid_filename rejects names like ".."
        cleaned = "image"
    return cleaned[:200] or "image"


def _allow_pixels(max_pixels: int) -> None:
    """Let Pillow open images up to the configured limit: its own guard against decompression bombs
    refuses twice its ``MAX_IMAGE_PIXELS`` (about 179 million pixels by default, a 13400x13400 scan)
    before the limit is checked here. Above twice the limit it still refuses, and that is reported
    as over the limit."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _grey(im: Image.Image) -> bool:
    """Whether a decoded image has no colour: a grey mode, or colour channels that agree everywhere
    (judged on a grid of at most about a million of its pixels, as ``ml.imageio.is_grey`` does)."""
    if im.mode in _GREY_MODES:
        return True
    step = max(1, int(np.ceil(np.sqrt(im.width * im.height / 1e6))))
    small = im.resize((max(1, im.width // step), max(1, im.height // step)), Image.Resampling.NEAREST)
    return is_grey(np.asarray(small.convert("RGB")))


_MAX_PAGES_READ = 64


def _full_size_pages(im: Image.Image) -> int:
    """How many pages of a multi-page image have the first page's size (read from their headers): a
    scanner's pyramid or thumbnail pages are smaller and are no other field. Leaves the first page current."""
    pages = getattr(im, "n_frames", 1)
    if pages <= 1:
        return 1
    size, same = im.size, 1
    for page in range(1, min(pages, _MAX_PAGES_READ)):
        im.seek(page)
        same += im.size == size
    im.seek(0)
    return same


def image_upload_check(upload: UploadedFile) -> CheckedImage:
    name = clean_filename(upload.name)
    max_bytes = settings.LEUKOLAB_MAX_UPLOAD_BYTES
    if upload.size == 0:
        raise ApplicationError(f"{name}: the file is empty.", extra={"file": name})
    if upload.size > max_bytes:
        raise ApplicationError(
            f"{name}: the file is {upload.size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.",
            extra={"file": name},
            status_code=413,
        )
    max_pixels = settings.LEUKOLAB_MAX_IMAGE_PIXELS
    _allow_pixels(max_pixels)
    try:
        upload.seek(0)
        with Image.open(upload) as im:
            fmt, (width, height) = im.format, im.size
            if fmt not in ALLOWED_FORMATS:
                raise ApplicationError(
                    f"{name}: {fmt or 'this'} images are not accepted; upload JPEG, PNG, BMP or TIFF.",
                    extra={"file": name, "format": fmt},
                )
            if width * height > max_pixels:
                raise ApplicationError(
                    f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} pixels.",
                    extra={"file": name, "width": width, "height": height},
                )
            if width < 16 or height < 16:
                raise ApplicationError(f"{name}: {width}x{height} pixels is too small for a smear image.", extra={"file": name})
            fields = _full_size_pages(im)
            if fields > 1:
                raise ApplicationError(
                    f"{name}: a TIFF of {fields} full-size pages; only one would be analysed. Upload each field "
                    "as an image of its own (a slide takes several images at once).",
                    extra={"file": name, "pages": fields},
                )
            if width * height <= _FULL_DECODE_MAX_PIXELS:
                im.load()
                grey = _grey(im)
            else:
                grey = im.mode in _GREY_MODES
                im.verify()
            if grey:
                raise ApplicationError(
                    f"{name}: a grey image (no colour). Leukolab finds white cells by the stain's colours and "
                    "classifies them in colour; upload the colour image of the smear.",
                    extra={"file": name, "mode": im.mode},
                )
    except ApplicationError:
        raise
    except Image.DecompressionBombError as exc:
        raise ApplicationError(
            f"{name}: the image is over the limit of {max_pixels:,} pixels.", extra={"file": name}
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ApplicationError(
            f"{name}: not a readable JPEG, PNG, BMP or TIFF image ({exc}).", extra={"file": name}
        ) from exc
    # The size of the upright image (EXIF orientation applied), as the analysis reads it and browsers
    # show it: a camera's JPEG stored sideways has its cells' boxes in upright pixels. From the header,
    # opened again (Pillow's verify leaves an image unusable).
    upload.seek(0)
    try:
        with Image.open(upload) as im:
            width, height = upright_size(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApplicationError(f"{name}: not a readable image ({exc}).", extra={"file": name}) from exc
    upload.seek(0)
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return CheckedImage(upload, name, fmt, width, height, upload.size, digest.hexdigest())
