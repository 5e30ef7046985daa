from django.contrib import admin

from webapp.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "key", "status", "progress", "attempts", "created_at")
    list_filter = ("kind", "status")
