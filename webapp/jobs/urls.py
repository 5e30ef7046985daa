from django.urls import path

from webapp.jobs.apis import JobDetailApi, JobListApi

urlpatterns = [
    path("", JobListApi.as_view(), name="job-list"),
    path("<int:pk>/", JobDetailApi.as_view(), name="job-detail"),
]
