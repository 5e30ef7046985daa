from django.conf import settings
from django.db import models


UNIDENTIFIED = "unidentified"


class Cell(models.Model):
    """A white cell on one image of a slide: its box, the model's call and the reviewer's."""

    class Source(models.TextChoices):
        MODEL = "model"
        PERSON = "person"

    slide = models.ForeignKey("slides.Slide", on_delete=models.CASCADE, related_name="cells")
    image = models.ForeignKey("slides.SlideImage", on_delete=models.CASCADE, related_name="cells")
    x0 = models.FloatField()
    y0 = models.FloatField()
    x1 = models.FloatField()
    y1 = models.FloatField()
    source = models.CharField(max_length=8, choices=Source.choices)
    localizer_score = models.FloatField(null=True, blank=True)
    predicted_class = models.CharField(max_length=64, blank=True)
    probabilities = models.JSONField(default=dict, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="cells"
    )
    localizer_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    heatmap = models.ImageField(upload_to="heatmaps/%Y/%m/", blank=True, max_length=300)
    # the cell cut from the full-resolution image, where the browser is shown a reduced preview of it
    # (a scan): what the viewer shows of the cell otherwise comes from that preview
    crop = models.ImageField(upload_to="crops/%Y/%m/", blank=True, max_length=300)
    reviewed_class = models.CharField(max_length=64, blank=True)
    # Pascal VOC's <difficult>: a cell its annotator could not make out for sure; box files keep it, and
    # localization scores leave it out (neither a cell to find nor a false detection where one is found)
    difficult = models.BooleanField(default=False)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["image_id", "y0", "x0", "id"]
        permissions = [("reclassify_cell", "Can set the reviewed class of a cell")]
        constraints = [
            models.CheckConstraint(condition=models.Q(x1__gt=models.F("x0"), y1__gt=models.F("y0")), name="cell_box_not_empty")
        ]

    @property
    def effective_class(self) -> str:
        return self.reviewed_class or self.predicted_class

    @property
    def unidentified(self) -> bool:
        """The model's class is too unsure to show (``LEUKOLAB_UNIDENTIFIED_BELOW``) and no person has
        given one."""
        below = settings.LEUKOLAB_UNIDENTIFIED_BELOW
        return (not self.reviewed_class and bool(self.predicted_class) and below is not None
                and self.confidence is not None and self.confidence < below)

    @property
    def shown_class(self) -> str:
        """What a reviewer is shown and the differential counts: the person's class, else the model's,
        else ``unidentified`` where the model is unsure (empty where there is no class at all)."""
        return UNIDENTIFIED if self.unidentified else self.effective_class

    @property
    def box(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]

    def __str__(self) -> str:
        return f"cell {self.pk} ({self.effective_class or 'unclassified'})"


class CellEvent(models.Model):
    """One change to a cell's box or class: who, when, before and after. Kept when the cell is deleted."""

    class Action(models.TextChoices):
        CREATE = "create"
        MOVE = "move"
        RECLASSIFY = "reclassify"
        DELETE = "delete"
        ANSWER = "answer"  # the model's answer for a box drawn or moved by a person
        MARK = "mark"  # marked difficult (hard to make out), or the mark taken off
        RESTORE = "restore"  # a deleted box brought back as it was (undo)

    cell = models.ForeignKey(Cell, on_delete=models.SET_NULL, null=True, related_name="events")
    cell_ref = models.BigIntegerField(help_text="the cell's id, kept after deletion")
    slide = models.ForeignKey("slides.Slide", on_delete=models.CASCADE, related_name="cell_events")
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["at", "id"]
