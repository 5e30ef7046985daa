from django.contrib import admin

from webapp.patients.models import Patient


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("identifier", "lab", "created_at")
    list_filter = ("lab",)
    search_fields = ("identifier",)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # through the app (patients.services.patient_delete): a patient's slides are deleted first
