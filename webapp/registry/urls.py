from django.urls import path

from webapp.registry.apis import (ClassifierRetrainApi, ModelFigureApi, ModelVersionListApi, ModelVersionPromoteApi,
                                  RetrainScheduleApi)

urlpatterns = [
    path("", ModelVersionListApi.as_view(), name="model-version-list"),
    path("<int:pk>/promote/", ModelVersionPromoteApi.as_view(), name="model-version-promote"),
    path("<int:pk>/figures/<slug:name>/", ModelFigureApi.as_view(), name="model-figure"),
    path("retrain/", ClassifierRetrainApi.as_view(), name="classifier-retrain"),
    path("retrain/schedule/", RetrainScheduleApi.as_view(), name="classifier-retrain-schedule"),
]
