from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from webapp.common.permissions import require
from webapp.jobs.apis import JobOutputSerializer
from webapp.registry.models import ModelFigure
from webapp.registry.selectors import model_version_list
from webapp.registry.services import classifier_retrain_request, model_version_promote


class ModelFigureOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    url = serializers.SerializerMethodField()

    def get_url(self, figure) -> str:
        return f"/api/model-versions/{figure.model_version_id}/figures/{figure.name}/"


class ModelVersionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    architecture = serializers.CharField()
    version = serializers.CharField()
    status = serializers.CharField()
    parameters = serializers.JSONField()
    metrics = serializers.JSONField()
    created_at = serializers.DateTimeField()
    activated_at = serializers.DateTimeField(allow_null=True)
    figures = ModelFigureOutputSerializer(many=True, read_only=True,
                                          help_text="plots made when the version was trained (PNG), in a fixed order")


class ModelVersionListApi(GenericAPIView):
    permission_classes = [require("registry.view_modelversion")]
    serializer_class = ModelVersionOutputSerializer

    @extend_schema(
        summary="Model versions",
        parameters=[OpenApiParameter("kind", str, enum=["localizer", "classifier"])],
        responses=ModelVersionOutputSerializer(many=True),
    )
    def get(self, request):
        kind = request.query_params.get("kind")
        if kind not in (None, "", "localizer", "classifier"):
            kind = "__none__"
        page = self.paginate_queryset(model_version_list(kind=kind or None))
        return self.get_paginated_response(ModelVersionOutputSerializer(page, many=True).data)


class ModelFigureApi(GenericAPIView):
    permission_classes = [require("registry.view_modelversion")]

    @extend_schema(summary="A plot of a model version (PNG)", responses={(200, "image/png"): bytes})
    def get(self, request, pk: int, name: str):
        figure = get_object_or_404(ModelFigure, model_version_id=pk, name=name)
        return FileResponse(figure.image.open("rb"), content_type="image/png")


class ModelVersionPromoteApi(GenericAPIView):
    permission_classes = [require("registry.change_modelversion")]
    serializer_class = ModelVersionOutputSerializer

    @extend_schema(summary="Make a version the active one of its kind", request=None, responses=ModelVersionOutputSerializer)
    def post(self, request, pk: int):
        mv = model_version_promote(model_version=get_object_or_404(model_version_list(), pk=pk))
        return Response(ModelVersionOutputSerializer(mv).data)


class ClassifierRetrainApi(GenericAPIView):
    permission_classes = [require("registry.add_modelversion")]
    serializer_class = JobOutputSerializer  # what it answers (OPTIONS describes it)

    @extend_schema(summary="Train the classifier again on the training data and every cell a person classed; the "
                           "result is registered as a candidate version", request=None, responses={202: JobOutputSerializer})
    def post(self, request):
        job = classifier_retrain_request(user=request.user)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)
