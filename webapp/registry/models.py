from django.db import models


class ModelVersion(models.Model):
    """A trained localizer or classifier; one version of each kind is active at a time."""

    class Kind(models.TextChoices):
        LOCALIZER = "localizer"
        CLASSIFIER = "classifier"

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    architecture = models.CharField(max_length=100)
    version = models.CharField(max_length=100)
    parameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    artifact = models.FileField(upload_to="models/%Y/%m/", blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=models.Q(status="active"), name="one_active_model_per_kind"
            ),
            models.UniqueConstraint(fields=["kind", "version"], name="model_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.architecture}:{self.version}"


class ModelFigure(models.Model):
    """A plot of a model version made when it was trained or evaluated (its confusion matrix, curves, ...)."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="figures")
    name = models.CharField(max_length=64, help_text="what the plot shows, e.g. confusion")
    title = models.CharField(max_length=200)
    image = models.FileField(upload_to="models/figures/%Y/%m/")

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["model_version", "name"], name="model_figure_unique")]

    def __str__(self) -> str:
        return f"{self.model_version}:{self.name}"
