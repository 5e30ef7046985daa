from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from webapp.common.exceptions import ApplicationError
from webapp.common.permissions import require
from webapp.jobs.apis import JobOutputSerializer
from webapp.patients.selectors import patient_list
from webapp.slides.models import SlideImage
from webapp.slides.selectors import slide_latest_job, slide_list
from webapp.slides.services import (TILE_SIZE, slide_analyze_request, slide_delete, slide_image_tile_path, slide_sign_off,
                                    slide_upload)

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff"}


class SlideImageOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    filename = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    url = serializers.SerializerMethodField(help_text="what a browser shows: a JPEG preview for TIFF files and large scans")
    original_url = serializers.SerializerMethodField()
    tiles = serializers.SerializerMethodField(
        help_text="for a large scan: JPEG tiles to zoom into ({size, levels, url}, url with {level}, {col}, {row}); "
                  "level k is the image at 1/2^k, tile (col, row) its pixels from (col*size, row*size)")

    def get_url(self, image) -> str:
        return f"/api/slide-images/{image.pk}/display/"

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_tiles(self, image) -> dict | None:
        if not image.tile_levels:
            return None
        return {"size": TILE_SIZE, "levels": image.tile_levels,
                "url": f"/api/slide-images/{image.pk}/tiles/{{level}}/{{col}}_{{row}}.jpg"}

    def get_original_url(self, image) -> str:
        return f"/api/slide-images/{image.pk}/file/"


class SlideOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    patient = serializers.IntegerField(source="patient_id")
    patient_identifier = serializers.CharField(source="patient.identifier")
    status = serializers.CharField()
    error = serializers.CharField()
    stain = serializers.CharField()
    microns_per_pixel = serializers.FloatField(allow_null=True)
    uploaded_by = serializers.SerializerMethodField()
    uploaded_at = serializers.DateTimeField()
    analyzed_at = serializers.DateTimeField(allow_null=True)
    signed_off_by = serializers.SerializerMethodField()
    signed_off_at = serializers.DateTimeField(allow_null=True)
    images = SlideImageOutputSerializer(many=True)
    cell_count = serializers.IntegerField()
    job = serializers.SerializerMethodField()

    def get_uploaded_by(self, slide) -> str | None:
        return slide.uploaded_by.username if slide.uploaded_by_id else None

    def get_signed_off_by(self, slide) -> str | None:
        return slide.signed_off_by.username if slide.signed_off_by_id else None

    def get_job(self, slide) -> dict | None:
        job = slide_latest_job(slide=slide)
        return JobOutputSerializer(job).data if job else None


class SlideUploadSerializer(serializers.Serializer):
    patient = serializers.IntegerField()
    images = serializers.ListField(child=serializers.FileField(allow_empty_file=True), allow_empty=False)
    stain = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    # what light microscopes and scanners give (a 100x objective about 0.1, a 20x scan about 0.5)
    microns_per_pixel = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0.005,
                                               max_value=2.0)


class SlideListApi(GenericAPIView):
    serializer_class = SlideOutputSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self):
        return [require("slides.add_slide" if self.request.method == "POST" else "slides.view_slide")()]

    @extend_schema(
        summary="Slides of your lab",
        parameters=[
            OpenApiParameter("patient", int, description="only this patient's slides"),
            OpenApiParameter("status", str, enum=["queued", "analyzing", "analyzed", "failed"]),
        ],
        responses=SlideOutputSerializer(many=True),
    )
    def get(self, request):
        patient = request.query_params.get("patient")
        if patient is not None and not (patient.isdigit() and int(patient) < 2**63):  # ids are 64-bit
            raise ApplicationError("patient must be a patient id (a number).")
        qs = slide_list(user=request.user, patient_id=int(patient) if patient else None, status=request.query_params.get("status"))
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(SlideOutputSerializer(page, many=True).data)

    @extend_schema(
        summary="Upload one or more smear images as a new slide; its analysis is queued",
        request={"multipart/form-data": SlideUploadSerializer},
        responses={201: SlideOutputSerializer},
    )
    def post(self, request):
        payload = {
            "patient": request.data.get("patient"),
            "images": request.FILES.getlist("images"),
            "stain": request.data.get("stain", ""),
            "microns_per_pixel": request.data.get("microns_per_pixel") or None,
        }
        data = SlideUploadSerializer(data=payload)
        data.is_valid(raise_exception=True)
        patient = patient_list(user=request.user).filter(pk=data.validated_data["patient"]).first()
        if patient is None:
            raise ApplicationError("No such patient in your lab.", status_code=404)
        slide, _job = slide_upload(
            user=request.user,
            patient=patient,
            files=data.validated_data["images"],
            stain=data.validated_data["stain"],
            microns_per_pixel=data.validated_data["microns_per_pixel"],
            max_files=settings.LEUKOLAB_MAX_FILES_PER_UPLOAD,
        )
        return Response(SlideOutputSerializer(slide_list(user=request.user).get(pk=slide.pk)).data, status=status.HTTP_201_CREATED)


class SlideDetailApi(GenericAPIView):
    serializer_class = SlideOutputSerializer

    def get_permissions(self):
        return [require("slides.delete_slide" if self.request.method == "DELETE" else "slides.view_slide")()]

    @extend_schema(summary="One slide, with its images and latest analysis job", responses=SlideOutputSerializer)
    def get(self, request, pk: int):
        return Response(SlideOutputSerializer(get_object_or_404(slide_list(user=request.user), pk=pk)).data)

    @extend_schema(
        summary="Delete a slide that is not signed off, with its cells, their history and its files",
        responses={204: None, 409: OpenApiResponse(description="signed off, or its analysis or a cell's answer not ended")},
    )
    def delete(self, request, pk: int):
        slide_delete(slide=get_object_or_404(slide_list(user=request.user), pk=pk), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SlideAnalyzeApi(GenericAPIView):
    permission_classes = [require("slides.analyze_slide")]
    serializer_class = JobOutputSerializer

    @extend_schema(summary="Run the analysis again with the active models", request=None, responses={202: JobOutputSerializer})
    def post(self, request, pk: int):
        job = slide_analyze_request(slide=get_object_or_404(slide_list(user=request.user), pk=pk), user=request.user)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class SlideSignOffApi(GenericAPIView):
    permission_classes = [require("slides.signoff_slide")]
    serializer_class = SlideOutputSerializer

    @extend_schema(summary="Sign off an analyzed slide", request=None, responses=SlideOutputSerializer)
    def post(self, request, pk: int):
        slide_sign_off(slide=get_object_or_404(slide_list(user=request.user), pk=pk), user=request.user)
        return Response(SlideOutputSerializer(slide_list(user=request.user).get(pk=pk)).data)


def _image_response(file, content_type: str, filename: str) -> FileResponse:
    response = FileResponse(file.open("rb"), content_type=content_type)
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Cache-Control"] = "private, max-age=3600"
    return response


class SlideImageTileApi(GenericAPIView):
    permission_classes = [require("slides.view_slide")]

    @extend_schema(summary="One JPEG tile of a large scan (see the image's tiles)", responses={(200, "image/jpeg"): bytes})
    def get(self, request, pk: int, level: int, col: int, row: int):
        image = get_object_or_404(SlideImage.objects.filter(slide__in=slide_list(user=request.user)), pk=pk)
        path = slide_image_tile_path(image=image, level=level, col=col, row=row)
        if level >= image.tile_levels or not default_storage.exists(path):
            raise ApplicationError("No such tile of this image.", status_code=404)
        return _image_response(default_storage.open(path, "rb"), "image/jpeg", f"{image.pk}-{level}-{col}-{row}.jpg")


class SlideImageFileApi(GenericAPIView):
    permission_classes = [require("slides.view_slide")]

    @extend_schema(summary="The image file as uploaded", responses={(200, "image/*"): bytes})
    def get(self, request, pk: int):
        image = get_object_or_404(SlideImage.objects.filter(slide__in=slide_list(user=request.user)), pk=pk)
        return _image_response(image.file, CONTENT_TYPES.get(image.format, "application/octet-stream"), image.filename)


class SlideImageDisplayApi(GenericAPIView):
    permission_classes = [require("slides.view_slide")]

    @extend_schema(summary="The image for display: its JPEG preview when it has one, else the file", responses={(200, "image/*"): bytes})
    def get(self, request, pk: int):
        image = get_object_or_404(SlideImage.objects.filter(slide__in=slide_list(user=request.user)), pk=pk)
        if image.preview:
            return _image_response(image.preview, "image/jpeg", image.filename.rsplit(".", 1)[0] + ".jpg")
        return _image_response(image.file, CONTENT_TYPES.get(image.format, "application/octet-stream"), image.filename)
