from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from webapp.common.permissions import require
from webapp.jobs.models import Job
from webapp.jobs.selectors import job_list


class JobOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    message = serializers.CharField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    params = serializers.JSONField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class JobListApi(GenericAPIView):
    permission_classes = [require("jobs.view_job")]
    serializer_class = JobOutputSerializer

    @extend_schema(
        summary="Your lab's jobs",
        parameters=[OpenApiParameter("status", str, enum=list(Job.Status.values))],
        responses=JobOutputSerializer(many=True),
    )
    def get(self, request):
        page = self.paginate_queryset(job_list(user=request.user, status=request.query_params.get("status")))
        return self.get_paginated_response(JobOutputSerializer(page, many=True).data)


class JobDetailApi(GenericAPIView):
    permission_classes = [require("jobs.view_job")]
    serializer_class = JobOutputSerializer

    @extend_schema(summary="One job: status and progress", responses=JobOutputSerializer)
    def get(self, request, pk: int):
        return Response(JobOutputSerializer(get_object_or_404(job_list(user=request.user), pk=pk)).data)
