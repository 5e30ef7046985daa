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


# sRGB's primaries and white point as an ICC profile states them (adapted to D50), XYZ
SRGB_PRIMARIES = [(0.4360, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]


def _rgb_profile(primaries, gamma: float = 2.2, name: str = "Test RGB") -> bytes:
    """A minimal ICC v2 display profile (matrix and gamma curves): ``primaries`` are the XYZ of the
    file's red, green and blue. Pillow cannot make one other than sRGB and the machine may have none."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    text = name.encode() + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    red, green, blue = primaries
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*red)), (b"gXYZ", xyz(*green)),
            (b"bXYZ", xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"none\0")]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_colours_saved_in_another_profile_are_read_in_srgb(fmt):
    """A file whose profile says its first channel is blue (red and blue swapped) reads blue where its
    pixels store (200, 40, 30), strip by strip as the whole image converts; before, the profile was
    ignored and the cell's stain read in the wrong colours."""
    from PIL import ImageCms

    icc = _rgb_profile([SRGB_PRIMARIES[2], SRGB_PRIMARIES[1], SRGB_PRIMARIES[0]])
    pixels = np.zeros((STRIP_ROWS * 2 + 37, 90, 3), np.uint8)
    pixels[:] = (200, 40, 30)
    pixels[STRIP_ROWS + 5:, 45:] = (30, 40, 200)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, icc_profile=icc, **({"quality": 95} if fmt == "JPEG" else {}))
    got = load_image(io.BytesIO(buf.getvalue())).astype(int)
    top, bottom = got[0, 0], got[-1, -1]
    assert top[2] > 180 and top[0] < 50, top  # stored red, shown blue
    assert bottom[0] > 180 and bottom[2] < 50, bottom
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        whole = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"))
        assert np.array_equal(got, np.asarray(whole).astype(int))


def test_an_srgb_profile_or_none_leaves_the_pixels_and_a_broken_one_is_named(caplog):
    import logging

    from PIL import ImageCms

    pixels = _smooth(40, 60)
    plain = load_image(io.BytesIO(_encoded(Image.fromarray(pixels), "PNG")))
    assert np.array_equal(plain, pixels)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (srgb, b"not a profile"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", icc_profile=icc)
        buf.name = "field.png"
        with caplog.at_level(logging.WARNING):
            assert np.array_equal(load_image(buf), pixels)
    assert caplog.text.count("field.png: its colour profile is not used") == 1
    # an RGB profile on CMYK pixels does not fit them: Pillow's plain conversion, with a warning
    buf = io.BytesIO()
    Image.new("CMYK", (20, 20), (0, 200, 200, 0)).save(buf, format="JPEG", icc_profile=_rgb_profile(SRGB_PRIMARIES))
    with caplog.at_level(logging.WARNING):
        assert tuple(load_image(buf)[0, 0]) == tuple(Image.open(io.BytesIO(buf.getvalue())).convert("RGB").getpixel((0, 0)))
    assert "a RGB profile on CMYK pixels" in caplog.text
