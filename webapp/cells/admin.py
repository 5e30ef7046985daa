from django.contrib import admin

from webapp.cells.models import Cell, CellEvent


@admin.register(Cell)
class CellAdmin(admin.ModelAdmin):
    list_display = ("id", "slide", "source", "predicted_class", "reviewed_class", "confidence")
    list_filter = ("source", "predicted_class", "difficult")


@admin.register(CellEvent)
class CellEventAdmin(admin.ModelAdmin):
    list_display = ("at", "cell_ref", "action", "actor")
