from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.common.permissions import require
from webapp.jobs.apis import JobOutputSerializer
from webapp.registry.models import ModelFigure
from webapp.registry.selectors import classifier_retrain_schedule, model_version_list
from webapp.registry.services import (classifier_retrain_request, classifier_retrain_schedule_set, detector_train_request,
                                       model_version_promote)


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


class DetectorTrainApi(GenericAPIView):
    permission_classes = [require("registry.add_modelversion")]
    serializer_class = JobOutputSerializer  # what it answers (OPTIONS describes it)

    @extend_schema(summary="Train the deep detector on the annotated fields and the slides whose boxes people looked "
                           "at; the result is registered as a candidate localizer", request=None,
                   responses={202: JobOutputSerializer})
    def post(self, request):
        job = detector_train_request(user=request.user)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class RetrainScheduleInputSerializer(serializers.Serializer):
    every = serializers.ChoiceField(choices=["never", "day", "week"])
    time = serializers.TimeField(required=False, format="%H:%M", help_text="time of day, HH:MM (not for never)")
    day_of_week = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=6,
                                           help_text="0 Sunday to 6 Saturday (every week only)")
    timezone = serializers.CharField(required=False, default="UTC", max_length=64,
                                     help_text="the time's zone, e.g. Europe/Vienna (IANA name)")

    def validate_timezone(self, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError(
                f"{value!r} is no time zone this server knows (e.g. Europe/Vienna, UTC).") from None
        return value

    def validate(self, data):
        if data["every"] != "never" and data.get("time") is None:
            raise serializers.ValidationError({"time": "A schedule needs the time of day it retrains at (HH:MM)."})
        if data["every"] == "week" and data.get("day_of_week") is None:
            raise serializers.ValidationError({"day_of_week": "A weekly schedule needs its day (0 Sunday to 6 Saturday)."})
        return data


class RetrainScheduleOutputSerializer(serializers.Serializer):
    every = serializers.ChoiceField(choices=["never", "day", "week", "custom"],
                                    help_text="custom: a schedule changed on the admin site, see description")
    time = serializers.CharField(allow_null=True)
    day_of_week = serializers.IntegerField(allow_null=True)
    timezone = serializers.CharField(allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    runs = serializers.BooleanField(help_text="whether a scheduler runs beside this server (a Celery worker and beat)")
    description = serializers.CharField(required=False)


class RetrainScheduleApi(APIView):  # one schedule, no object to look up (OPTIONS describes no form)
    permission_classes = [require("registry.add_modelversion")]

    @extend_schema(summary="When the classifier is retrained on its own", responses=RetrainScheduleOutputSerializer)
    def get(self, request):
        return Response(RetrainScheduleOutputSerializer(classifier_retrain_schedule()).data)

    @extend_schema(summary="Retrain the classifier every day or week at a time, or never", request=RetrainScheduleInputSerializer,
                   responses=RetrainScheduleOutputSerializer)
    def put(self, request):
        data = RetrainScheduleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        classifier_retrain_schedule_set(every=v["every"], at=v.get("time"), day_of_week=v.get("day_of_week"),
                                        timezone_name=v["timezone"])
        return Response(RetrainScheduleOutputSerializer(classifier_retrain_schedule()).data)
