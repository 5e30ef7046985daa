from django.contrib import admin

from webapp.patients.models import Deletion, Patient


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("identifier", "lab", "created_at")
    list_filter = ("lab",)
    search_fields = ("identifier",)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # through the app (patients.services.patient_delete): a patient's slides are deleted first


@admin.register(Deletion)
class DeletionAdmin(admin.ModelAdmin):
    """Read only: the record of what was deleted is not to be changed or removed."""

    list_display = ("deleted_at", "kind", "ref", "patient_identifier", "deleted_by", "lab")
    list_filter = ("kind", "lab")
    search_fields = ("patient_identifier",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
