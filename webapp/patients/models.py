from django.conf import settings
from django.db import models


class Patient(models.Model):
    """A patient, known only by a pseudonymous identifier chosen by the lab."""

    lab = models.ForeignKey("accounts.Lab", on_delete=models.PROTECT, related_name="patients")
    identifier = models.CharField(max_length=64)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["lab", "identifier"], name="patient_identifier_unique_per_lab")]

    def __str__(self) -> str:
        return self.identifier
