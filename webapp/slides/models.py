import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


class Slide(models.Model):
    """One smear of a patient: one or more image files, analysed together, signed off once."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        ANALYZING = "analyzing"
        ANALYZED = "analyzed"
        FAILED = "failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey("patients.Patient", on_delete=models.CASCADE, related_name="slides")
    stain = models.CharField(max_length=100, blank=True)
    microns_per_pixel = models.FloatField(null=True, blank=True, validators=[MinValueValidator(1e-4)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)
    analyzed_at = models.DateTimeField(null=True, blank=True)
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        permissions = [("analyze_slide", "Can run the analysis of a slide"), ("signoff_slide", "Can sign off a slide")]

    def __str__(self) -> str:
        return f"slide {self.pk} of {self.patient}"

    @property
    def files_folder(self) -> str:
        """The storage folder of the slide's image files and of the classifier statistics its analyses keep."""
        return f"slides/{self.uuid}"

    @property
    def tiles_folder(self) -> str:
        """The storage folder of the zoom tiles of the slide's scans."""
        return f"tiles/{self.uuid}"


def slide_image_path(instance: "SlideImage", filename: str) -> str:
    # Stored names are ours, never the uploader's: the original name is kept in ``filename``.
    return f"{instance.slide.files_folder}/{uuid.uuid4().hex}.{instance.format_ext}"


class SlideImage(models.Model):
    slide = models.ForeignKey(Slide, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to=slide_image_path, max_length=300)
    filename = models.CharField(max_length=255, help_text="the uploaded file's name, cleaned")
    format = models.CharField(max_length=8)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    position = models.PositiveIntegerField(default=0)
    preview = models.FileField(upload_to="previews/%Y/%m/", blank=True, max_length=300,
                               help_text="a JPEG for browsers, for TIFF files and large scans")
    tile_levels = models.PositiveSmallIntegerField(
        default=0, help_text="levels of JPEG tiles a browser zooms into a large scan with (0: none; level k at 1/2^k)")

    class Meta:
        ordering = ["slide", "position", "id"]

    @property
    def format_ext(self) -> str:
        return {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif"}.get(self.format, "img")

    def __str__(self) -> str:
        return self.filename
