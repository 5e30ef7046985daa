from django.contrib import admin

from webapp.registry.models import ModelFigure, ModelVersion


class ModelFigureInline(admin.TabularInline):
    model = ModelFigure
    extra = 0


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("kind", "architecture", "version", "status", "created_at")
    list_filter = ("kind", "status")
    inlines = [ModelFigureInline]
