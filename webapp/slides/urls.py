from django.urls import path

from webapp.cells.apis import SlideBoxesImportApi, SlideCellRestoreApi, SlideCellsApi, SlideDifferentialApi, SlideHistoryApi
from webapp.slides.apis import SlideAnalyzeApi, SlideDetailApi, SlideListApi, SlideSignOffApi

urlpatterns = [
    path("", SlideListApi.as_view(), name="slide-list"),
    path("<int:pk>/", SlideDetailApi.as_view(), name="slide-detail"),
    path("<int:pk>/analyze/", SlideAnalyzeApi.as_view(), name="slide-analyze"),
    path("<int:pk>/sign-off/", SlideSignOffApi.as_view(), name="slide-sign-off"),
    path("<int:slide_id>/cells/", SlideCellsApi.as_view(), name="slide-cells"),
    path("<int:slide_id>/cells/restore/", SlideCellRestoreApi.as_view(), name="slide-cell-restore"),
    path("<int:slide_id>/differential/", SlideDifferentialApi.as_view(), name="slide-differential"),
    path("<int:slide_id>/history/", SlideHistoryApi.as_view(), name="slide-history"),
    path("<int:slide_id>/boxes/", SlideBoxesImportApi.as_view(), name="slide-boxes-import"),
]
