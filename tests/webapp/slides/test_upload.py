"""Uploads are checked for real image content and limits; a bad upload leaves nothing behind."""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.helpers import image_bytes, smear_field
from webapp.slides.models import Slide, SlideImage


def _media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "slides"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def hema(api_as):
    return api_as("hematologist", username="uploader")


@pytest.fixture
def patient_id(hema):
    return hema.post("/api/patients/", {"identifier": "UP-1"}, format="json").json()["id"]


def _rgb(w=64, h=48):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _tiff_pages(*arrays) -> bytes:
    from PIL import Image

    pages = [Image.fromarray(a) for a in arrays]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def test_a_tiff_with_smaller_pages_after_its_first_is_one_field(hema, patient_id):
    """A scanner's TIFF keeps reduced copies (a pyramid, a thumbnail) after the full image: one field."""
    from PIL import Image

    full = _rgb(128, 96)
    data = _tiff_pages(full, np.asarray(Image.fromarray(full).reduce(2)), np.asarray(Image.fromarray(full).reduce(4)))
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("scan.tif", data)]},
                  format="multipart")
    assert r.status_code == 201, r.content
    assert (r.json()["images"][0]["width"], r.json()["images"][0]["height"]) == (128, 96)


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif")])
def test_each_accepted_format_uploads(hema, patient_id, fmt, ext):
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile(f"a.{ext}", image_bytes(_rgb(), fmt))]}, format="multipart")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "queued" and body["images"][0]["width"] == 64 and body["job"]["status"] == "queued"


def test_several_images_make_one_slide(hema, patient_id):
    files = [SimpleUploadedFile(f"f{i}.png", image_bytes(_rgb(), "PNG")) for i in range(3)]
    r = hema.post("/api/slides/", {"patient": patient_id, "images": files}, format="multipart")
    assert r.status_code == 201
    assert [i["filename"] for i in r.json()["images"]] == ["f0.png", "f1.png", "f2.png"]


BAD = {
    "text renamed to jpg": (lambda: SimpleUploadedFile("smear.jpg", b"just some text, not an image"), 400, "not a readable"),
    "truncated jpeg": (lambda: SimpleUploadedFile("cut.jpg", image_bytes(_rgb(256, 256), "JPEG")[:600]), 400, "not a readable"),
    "gif": (lambda: SimpleUploadedFile("anim.gif", image_bytes(_rgb(), "GIF")), 400, "GIF images are not accepted"),
    "empty": (lambda: SimpleUploadedFile("empty.png", b""), 400, "empty"),
    "pixel bomb header": (lambda: SimpleUploadedFile("bomb.png", _png_header_only(100_000, 100_000)), 400, "over the limit"),
    "tiny": (lambda: SimpleUploadedFile("tiny.png", image_bytes(_rgb(8, 8), "PNG")), 400, "too small"),
    "grey png": (lambda: SimpleUploadedFile("grey.png", image_bytes(_rgb()[..., 0], "PNG")), 400, "a grey image (no colour)"),
    "grey as rgb jpeg": (lambda: SimpleUploadedFile("grey.jpg", image_bytes(np.repeat(_rgb()[..., :1], 3, axis=2), "JPEG")),
                         400, "a grey image (no colour)"),
    "tiff of two fields": (lambda: SimpleUploadedFile("fields.tif", _tiff_pages(_rgb(), _rgb()[::-1])), 400,
                           "a TIFF of 2 full-size pages"),
    "16-bit grey tiff": (lambda: SimpleUploadedFile("grey.tif", image_bytes(_rgb()[..., 0].astype(np.uint16) * 257, "TIFF")),
                         400, "a grey image (no colour)"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_upload_gets_a_clear_4xx_and_leaves_nothing(hema, patient_id, case):
    make, status, text = BAD[case]
    good = SimpleUploadedFile("good.png", image_bytes(_rgb(), "PNG"))
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [good, make()]}, format="multipart")
    assert r.status_code == status, r.content
    assert text in r.json()["message"]
    assert Slide.objects.count() == 0 and SlideImage.objects.count() == 0
    assert _media_files() == []


def test_size_limit(hema, patient_id, settings):
    settings.LEUKOLAB_MAX_UPLOAD_BYTES = 1000
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("big.bmp", image_bytes(_rgb(), "BMP"))]}, format="multipart")
    assert r.status_code == 413 and "limit" in r.json()["message"]
    assert Slide.objects.count() == 0


def test_pixel_limit_is_configurable(hema, patient_id, settings):
    settings.LEUKOLAB_MAX_IMAGE_PIXELS = 50 * 50
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("a.png", image_bytes(_rgb(64, 48), "PNG"))]}, format="multipart")
    assert r.status_code == 400 and "64x48 pixels is over the limit" in r.json()["message"]


def test_a_scan_within_the_pixel_limit_is_accepted_past_pillows_own_guard(hema, patient_id, settings, monkeypatch):
    """Pillow refuses images of more than twice its MAX_IMAGE_PIXELS (about 179 million pixels) as
    decompression bombs; a web process that has not read an image for analysis yet has that default,
    and a scan under the configured limit (20000x20000 by default) must still be accepted."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's own default
    settings.LEUKOLAB_MAX_IMAGE_PIXELS = 200_000_000
    buf = io.BytesIO()
    scan = Image.new("P", (15_000, 12_000), 0)  # 180 million pixels of a stain's pink, a few kB
    scan.putpalette([200, 150, 170])
    scan.save(buf, format="PNG")
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("scan.png", buf.getvalue())]},
                  format="multipart")
    assert r.status_code == 201, r.content
    assert r.json()["images"][0]["width"] == 15_000
    settings.LEUKOLAB_MAX_IMAGE_PIXELS = 100_000_000  # and over the limit it is refused, with the limit named
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("scan.png", buf.getvalue())]},
                  format="multipart")
    assert r.status_code == 400 and "over the limit of 100,000,000 pixels" in r.json()["message"]


def test_stored_names_are_ours_not_the_uploaders(hema, patient_id):
    name, data, _ = smear_field(0)
    evil = SimpleUploadedFile("../../../etc/passwd;rm -rf.png", data)
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [evil]}, format="multipart")
    assert r.status_code == 201, r.content
    image = SlideImage.objects.get()
    assert ".." not in image.file.name and "passwd" not in image.file.name
    assert image.file.name.startswith(f"slides/{image.slide.uuid}/")
    assert "/" not in image.filename and ".." not in image.filename
    stored = Path(image.file.path).resolve()
    assert str(stored).startswith(str(Path(settings.MEDIA_ROOT).resolve()))
    # the bytes served back are the bytes uploaded
    served = hema.get(f"/api/slide-images/{image.pk}/file/")
    assert served.status_code == 200 and b"".join(served.streaming_content) == data


@pytest.mark.parametrize(
    "payload,text",
    [
        ({}, "patient"),
        ({"patient": 999999}, "images"),
        ({"patient": "abc"}, "patient"),
    ],
)
def test_missing_fields(hema, patient_id, payload, text):
    r = hema.post("/api/slides/", payload, format="multipart")
    assert r.status_code == 400 and text in r.json()["message"]


def test_unknown_patient_is_404(hema, patient_id):
    r = hema.post("/api/slides/", {"patient": 999999, "images": [SimpleUploadedFile("a.png", image_bytes(_rgb(), "PNG"))]}, format="multipart")
    assert r.status_code == 404 and "No such patient" in r.json()["message"]


def test_tiff_gets_a_browser_preview_after_analysis(hema, patient_id):
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute

    name, data, _ = smear_field(0)
    from io import BytesIO

    from PIL import Image

    tif = BytesIO()
    Image.open(BytesIO(data)).convert("RGB").save(tif, format="TIFF")
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("scan.tif", tif.getvalue())]}, format="multipart")
    assert r.status_code == 201
    body = r.json()
    job_execute(job_id=Job.objects.get(pk=body["job"]["id"]).pk)
    image = body["images"][0]
    shown = hema.get(image["url"])
    assert shown.status_code == 200 and shown["Content-Type"] == "image/jpeg"
    preview = Image.open(BytesIO(b"".join(shown.streaming_content)))
    assert preview.format == "JPEG" and preview.size == (image["width"], image["height"])
    original = hema.get(image["original_url"])
    assert original["Content-Type"] == "image/tiff"


def test_large_scan_preview_is_downscaled(hema, patient_id, settings):
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute

    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 100
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("big.png", image_bytes(_rgb(400, 300), "PNG"))]}, format="multipart")
    job_execute(job_id=Job.objects.get(pk=r.json()["job"]["id"]).pk)
    from io import BytesIO

    from PIL import Image

    shown = hema.get(r.json()["images"][0]["url"])
    assert Image.open(BytesIO(b"".join(shown.streaming_content))).size == (100, 75)


def test_a_scan_many_times_the_preview_is_reduced_to_what_pillow_would_show(hema, patient_id, settings):
    """A scan is reduced by area averaging before Pillow's Lanczos (no full-size copy of it is
    made): the preview is the size and, within JPEG's error, the picture of Pillow's own thumbnail."""
    from io import BytesIO

    from PIL import Image


    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 100
    scan = _smooth_scan(900, 1200)
    r = _upload_and_analyze(hema, patient_id, scan)
    shown = Image.open(BytesIO(b"".join(hema.get(r.json()["images"][0]["url"]).streaming_content)))
    expected = Image.fromarray(scan)
    expected.thumbnail((100, 100), Image.Resampling.LANCZOS)
    assert shown.size == expected.size == (100, 75)
    difference = np.abs(np.asarray(shown.convert("RGB"), np.int16) - np.asarray(expected, np.int16))
    assert difference.mean() < 3


def test_a_scan_gets_tiles_to_zoom_into_and_a_field_none(hema, patient_id, settings, api_as, other_lab):
    """Level 0 at full resolution, each next level at half, down to where the preview is as sharp;
    512 px tiles, the last row and column cut at the image's edge; served to the slide's lab only."""
    from io import BytesIO

    from PIL import Image


    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 1000  # a 3000x2000 scan: levels at 1 and 1/2 (1/4 < 1000/3000)
    scan = _smooth_scan(2000, 3000)
    r = _upload_and_analyze(hema, patient_id, scan)
    image = hema.get(f"/api/slides/{r.json()['id']}/").json()["images"][0]
    tiles = image["tiles"]
    assert tiles["size"] == 512 and tiles["levels"] == 2

    def tile(level, col, row, client=hema):
        return client.get(tiles["url"].format(level=level, col=col, row=row))

    def pixels(response):
        assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
        return np.asarray(Image.open(BytesIO(b"".join(response.streaming_content))).convert("RGB"), np.int16)

    corner = pixels(tile(0, 5, 3))  # the last column and row: 3000 - 5*512 by 2000 - 3*512 pixels
    assert corner.shape == (2000 - 1536, 3000 - 2560, 3)
    assert np.abs(corner - scan[1536:, 2560:].astype(np.int16)).mean() < 3
    half = pixels(tile(1, 2, 1))  # level 1 is 1500x1000
    assert half.shape == (1000 - 512, 1500 - 1024, 3)
    expected = np.asarray(Image.fromarray(scan).resize((1500, 1000), Image.Resampling.BOX), np.int16)[512:, 1024:]
    assert np.abs(half - expected).mean() < 3
    assert tile(2, 0, 0).status_code == 404 and tile(0, 6, 0).status_code == 404
    outsider = api_as("hematologist", username="elsewhere", user_lab=other_lab)
    assert tile(0, 0, 0, outsider).status_code == 404

    settings.LEUKOLAB_PREVIEW_MAX_SIDE = 4096  # a field shown as it is: no tiles
    r = _upload_and_analyze(hema, patient_id, scan[:480, :640])
    assert hema.get(f"/api/slides/{r.json()['id']}/").json()["images"][0]["tiles"] is None


def _smooth_scan(height: int, width: int) -> np.ndarray:
    """A colourful image that survives JPEG and resampling (noise would not), for comparing pixels."""
    y, x = np.mgrid[:height, :width].astype(np.float32)
    scan = np.stack([128 + 100 * np.sin(x / 97), 128 + 100 * np.cos(y / 71), (x + y) * 255 / (height + width)], -1)
    return np.clip(scan, 0, 255).astype(np.uint8)


def _upload_and_analyze(hema, patient_id, array: np.ndarray):
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute

    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("scan.png", image_bytes(array, "PNG"))]},
                  format="multipart")
    assert r.status_code == 201, r.content
    job_execute(job_id=Job.objects.get(pk=r.json()["job"]["id"]).pk)
    return r


def test_images_recorded_sideways_before_get_their_upright_size(patient_id, hema):
    """The data migration for slides uploaded when a sideways JPEG kept its stored size."""
    import importlib

    from django.apps import apps
    from PIL import Image

    from webapp.slides.models import SlideImage

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 48)).save(buf, format="JPEG", exif=exif)  # stored 64x48, shown 48x64
    r = hema.post("/api/slides/", {"patient": patient_id, "images": [SimpleUploadedFile("side.jpg", buf.getvalue())]},
                  format="multipart")
    assert r.status_code == 201, r.content
    image = SlideImage.objects.get()
    assert (image.width, image.height) == (48, 64)
    SlideImage.objects.update(width=64, height=48)  # as recorded before
    importlib.import_module("webapp.slides.migrations.0004_slideimage_upright_size").upright_sizes(apps, None)
    image.refresh_from_db()
    assert (image.width, image.height) == (48, 64)
