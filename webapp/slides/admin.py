from django.contrib import admin

from webapp.slides.models import Slide, SlideImage


class SlideImageInline(admin.TabularInline):
    model = SlideImage
    extra = 0
    readonly_fields = ("filename", "format", "width", "height", "size_bytes", "sha256")
    can_delete = False


@admin.register(Slide)
class SlideAdmin(admin.ModelAdmin):
    list_display = ("id", "patient", "status", "uploaded_at", "signed_off_at")
    list_filter = ("status",)
    inlines = [SlideImageInline]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # through the app (slides.services.slide_delete), where the slide's files go with it
