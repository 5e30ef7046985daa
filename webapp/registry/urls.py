from django.urls import path

from webapp.registry.apis import ClassifierRetrainApi, ModelVersionListApi, ModelVersionPromoteApi

urlpatterns = [
    path("", ModelVersionListApi.as_view(), name="model-version-list"),
    path("<int:pk>/promote/", ModelVersionPromoteApi.as_view(), name="model-version-promote"),
    path("retrain/", ClassifierRetrainApi.as_view(), name="classifier-retrain"),
]
