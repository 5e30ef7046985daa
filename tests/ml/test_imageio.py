"""Reading images: the pixels Pillow decodes, turned upright, in an array of their own, without
whole-image copies on the way (a 20000x20000 scan is 1.2 GB as an array)."""
from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ml.imageio import STRIP_ROWS, load_image

REPO = Path(__file__).resolve().parents[2]


def _smooth(h: int, w: int) -> np.ndarray:
    """A colourful image that survives JPEG (noise would not compress, a flat one tells nothing)."""
    y, x = np.mgrid[:h, :w].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(x / 37), 128 + 100 * np.cos(y / 23), (x + y) % 256], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _encoded(im: Image.Image, fmt: str, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(buf, format=fmt, exif=exif)
    return buf.getvalue()


def _pillow(data: bytes) -> np.ndarray:
    """What Pillow itself gives: the image turned upright and converted to RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"),
                                      ("RGB", "TIFF")])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_an_image_is_read_as_pillow_decodes_it_upright(mode, fmt, orientation):
    # taller than a strip, and not a whole number of strips, so the strips' seams are crossed
    im = Image.fromarray(_smooth(STRIP_ROWS * 2 + 37, 301)).convert(mode)
    data = _encoded(im, fmt, orientation)
    arr = load_image(io.BytesIO(data))
    expected = _pillow(data)
    assert arr.dtype == np.uint8 and arr.shape == expected.shape and arr.shape[2] == 3
    assert np.array_equal(arr, expected)
    if orientation in (6, 8):  # a quarter turn swaps the sides
        assert arr.shape[:2] == (301, STRIP_ROWS * 2 + 37)
    arr[0, 0] = 0  # an array of its own: writable


def test_a_16_bit_image_is_stretched_to_grey_levels(tmp_path):
    ramp = (np.arange(64 * 40, dtype=np.uint16).reshape(40, 64) * 20)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    arr = load_image(tmp_path / "a.png")
    assert arr.shape == (40, 64, 3) and arr.min() == 0 and arr.max() == 255
    assert np.array_equal(arr[..., 0], arr[..., 2])


def test_reading_a_large_image_holds_no_more_than_the_decoded_image_and_its_array(tmp_path):
    """Peak memory while reading a 6000x5000 JPEG (an array of 90 MB): the decoded image (Pillow
    keeps RGB in four bytes a pixel) and the array: 2.5 times the array's size measured; copying it
    whole through bytes, as ``np.asarray(image).copy()`` does, took 4.7 times."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc to read peak memory")
    path = tmp_path / "scan.jpg"
    Image.fromarray(np.tile(_smooth(1000, 1000), (5, 6, 1))).save(path, quality=90)
    script = textwrap.dedent(f"""
        import numpy as np
        from ml.imageio import load_image
        def kb(key):
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
        np.zeros(1)
        try:
            open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
        except OSError:
            print("skip")
            raise SystemExit(0)
        before = kb("VmRSS")
        arr = load_image({str(path)!r})
        print((kb("VmHWM") - before) * 1024 / arr.nbytes)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    if last == "skip":
        pytest.skip("this machine does not let a process reset its peak memory (/proc/self/clear_refs)")
    ratio = float(last)
    assert ratio < 2.8, f"reading took {ratio:.2f} times the array's size at its peak"


def test_transparent_parts_are_the_bright_background_and_extra_pages_are_named(tmp_path, caplog):
    """A round field of view saved with transparency outside it reads as white there, not black (a
    black frame changed a cell's class); a TIFF of several pages is read at its first, with a warning."""
    import logging

    rgb = _smooth(40, 60)
    rgba = np.dstack([rgb, np.full((40, 60), 255, np.uint8)])
    rgba[:10, :, 3] = 0  # transparent band
    Image.fromarray(rgba, "RGBA").save(tmp_path / "round.png")
    got = load_image(tmp_path / "round.png")
    assert got.shape == (40, 60, 3) and (got[:10] == 255).all() and (got[10:] == rgb[10:]).all()
    pages = [Image.new("RGB", (30, 20), "white"), Image.fromarray(_smooth(20, 30))]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with caplog.at_level(logging.WARNING):
        assert (load_image(tmp_path / "pages.tif") == 255).all()
    assert "pages.tif: a TIFF of 2 pages; only its first page is read" in caplog.text
