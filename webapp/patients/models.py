from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class Patient(models.Model):
    """A patient, known only by a pseudonymous identifier chosen by the lab."""

    lab = models.ForeignKey("accounts.Lab", on_delete=models.PROTECT, related_name="patients")
    identifier = models.CharField(max_length=64)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # one patient per identifier in a lab, whatever the case it is typed in ("P-001" is "p-001")
        constraints = [models.UniqueConstraint("lab", Lower("identifier"), name="patient_identifier_unique_per_lab",
                                               violation_error_message="A patient with this identifier already exists in your lab.")]

    def __str__(self) -> str:
        return self.identifier


class Deletion(models.Model):
    """A slide or a patient deleted: what it was, by whom and when. Kept after the rows are gone (a slide's
    cells and their history go with it; this says that they were there)."""

    class Kind(models.TextChoices):
        SLIDE = "slide"
        PATIENT = "patient"

    lab = models.ForeignKey("accounts.Lab", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    ref = models.BigIntegerField(help_text="the deleted slide's or patient's id")
    patient_identifier = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True, help_text="a slide's images, cells, status and upload")
    deleted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    deleted_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-deleted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.ref} of patient {self.patient_identifier}"
