from django.urls import path

from webapp.cells.apis import CellCropApi, CellDetailApi, CellHeatmapApi

urlpatterns = [
    path("<int:pk>/", CellDetailApi.as_view(), name="cell-detail"),
    path("<int:pk>/heatmap/", CellHeatmapApi.as_view(), name="cell-heatmap"),
    path("<int:pk>/crop/", CellCropApi.as_view(), name="cell-crop"),
]
