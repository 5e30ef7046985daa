from django.urls import path

from webapp.registry.apis import ModelVersionListApi, ModelVersionPromoteApi

urlpatterns = [
    path("", ModelVersionListApi.as_view(), name="model-version-list"),
    path("<int:pk>/promote/", ModelVersionPromoteApi.as_view(), name="model-version-promote"),
]
