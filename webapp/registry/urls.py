from django.urls import path

from webapp.registry.apis import (ClassifierRetrainApi, DetectorTrainApi, ModelFigureApi, ModelVersionListApi,
                                  ModelVersionPromoteApi, RetrainScheduleApi)

urlpatterns = [
    path("", ModelVersionListApi.as_view(), name="model-version-list"),
    path("<int:pk>/promote/", ModelVersionPromoteApi.as_view(), name="model-version-promote"),
    path("<int:pk>/figures/<slug:name>/", ModelFigureApi.as_view(), name="model-figure"),
    path("retrain/", ClassifierRetrainApi.as_view(), name="classifier-retrain"),
    path("detector/train/", DetectorTrainApi.as_view(), name="detector-train"),
    path("retrain/schedule/", RetrainScheduleApi.as_view(), name="classifier-retrain-schedule"),
]
