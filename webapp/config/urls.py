from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from webapp.cells.apis import ExportBoxesApi, ExportCellsApi
from webapp.common.views import frontend_index
from webapp.patients.apis import DeletionListApi
from webapp.slides.apis import SlideImageDisplayApi, SlideImageFileApi, SlideImageTileApi

api = [
    path("auth/", include("webapp.accounts.urls")),
    path("patients/", include("webapp.patients.urls")),
    path("deletions/", DeletionListApi.as_view(), name="deletion-list"),
    path("slides/", include("webapp.slides.urls")),
    path("slide-images/<int:pk>/file/", SlideImageFileApi.as_view(), name="slide-image-file"),
    path("slide-images/<int:pk>/display/", SlideImageDisplayApi.as_view(), name="slide-image-display"),
    path("slide-images/<int:pk>/tiles/<int:level>/<int:col>_<int:row>.jpg", SlideImageTileApi.as_view(),
         name="slide-image-tile"),
    path("cells/", include("webapp.cells.urls")),
    path("jobs/", include("webapp.jobs.urls")),
    path("exports/boxes/", ExportBoxesApi.as_view(), name="export-boxes"),
    path("exports/cells/", ExportCellsApi.as_view(), name="export-cells"),
    path("model-versions/", include("webapp.registry.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # the docs page describes no operation of its own: OPTIONS is a 405 (its HTML renderer has no metadata template)
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", metadata_class=None), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

urlpatterns = [
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    re_path(r"^(?!api/|admin/|static/).*$", frontend_index, name="frontend"),
]

# the API's own error shape for addresses under /api/ that no operation answers, and for its server errors
handler400 = "webapp.common.views.bad_request"
handler404 = "webapp.common.views.not_found"
handler500 = "webapp.common.views.server_error"
