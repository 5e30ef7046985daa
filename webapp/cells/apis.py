from collections.abc import Mapping

from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils.http import content_disposition_header
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from zipstream import ZipStream

from webapp.cells.interchange import BOX_FORMATS, WHICH, boxes_export, boxes_import, crops_export
from webapp.cells.models import Cell
from webapp.cells.selectors import cell_history, cell_list, cells_awaiting_answer, slide_differential
from webapp.cells.services import cell_create, cell_delete, cell_restore, cell_update
from webapp.common.exceptions import ApplicationError
from webapp.common.permissions import require
from webapp.slides.models import Slide
from webapp.slides.selectors import slide_list


class CellOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    box = serializers.ListField(child=serializers.FloatField())
    source = serializers.CharField()
    predicted_class = serializers.CharField(allow_null=True)
    probabilities = serializers.DictField(child=serializers.FloatField())
    confidence = serializers.FloatField(allow_null=True)
    unidentified = serializers.BooleanField(
        help_text="the model's class is under the confidence it must reach to be shown (LEUKOLAB_UNIDENTIFIED_BELOW) "
                  "and no person has given one: class is 'unidentified'")
    model_version = serializers.SerializerMethodField()
    reviewed_class = serializers.CharField(allow_null=True)
    difficult = serializers.BooleanField(
        help_text="a cell its annotator could not make out for sure (Pascal VOC's <difficult>): box exports say so, "
                  "localization scores leave it out")
    reviewed_by = serializers.SerializerMethodField()
    reviewed_at = serializers.DateTimeField(allow_null=True)
    cls = serializers.SerializerMethodField()
    heatmap_url = serializers.SerializerMethodField()
    crop_url = serializers.SerializerMethodField()
    model_pending = serializers.SerializerMethodField(
        help_text="the model's answer and heatmap for the box as it is now (drawn or moved by a person) are being computed")

    def get_model_pending(self, cell) -> bool:
        pending = self.context.get("pending")
        return cell.pk in (pending if pending is not None else cells_awaiting_answer(cell=cell))

    def get_model_version(self, cell) -> str | None:
        return cell.model_version.version if cell.model_version_id else None

    def get_reviewed_by(self, cell) -> str | None:
        return cell.reviewed_by.username if cell.reviewed_by_id else None

    def get_cls(self, cell) -> str | None:
        return cell.shown_class or None

    # the query names the version: a box moved by hand gets a new heatmap (and loses its crop) at the same address
    def get_heatmap_url(self, cell) -> str | None:
        return f"/api/cells/{cell.pk}/heatmap/?v={cell.updated_at:%Y%m%d%H%M%S%f}" if cell.heatmap else None

    def get_crop_url(self, cell) -> str | None:
        return f"/api/cells/{cell.pk}/crop/?v={cell.updated_at:%Y%m%d%H%M%S%f}" if cell.crop else None

    def to_representation(self, cell):
        data = super().to_representation(cell)
        data["class"] = data.pop("cls")
        data["predicted_class"] = cell.predicted_class or None
        data["reviewed_class"] = cell.reviewed_class or None
        return data


def _slide_for(request, slide_id: int):
    return get_object_or_404(slide_list(user=request.user), pk=slide_id)


def _cell_for(request, pk: int) -> Cell:
    slides = slide_list(user=request.user)
    return get_object_or_404(Cell.objects.filter(slide__in=slides).select_related("image"), pk=pk)


class SlideCellsApi(GenericAPIView):
    serializer_class = CellOutputSerializer

    class CellCreateSerializer(serializers.Serializer):
        image = serializers.IntegerField()
        box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4)
        label = serializers.CharField(required=False, allow_blank=True, default="")
        difficult = serializers.BooleanField(required=False, default=False)

    def get_permissions(self):
        return [require("cells.add_cell" if self.request.method == "POST" else "cells.view_cell")()]

    @extend_schema(summary="The cells of a slide", responses=CellOutputSerializer(many=True))
    def get(self, request, slide_id: int):
        slide = _slide_for(request, slide_id)
        pending = cells_awaiting_answer(slide=slide)
        return Response(CellOutputSerializer(cell_list(slide=slide), many=True, context={"pending": pending}).data)

    @extend_schema(summary="Draw a new cell box", request=CellCreateSerializer, responses={201: CellOutputSerializer})
    def post(self, request, slide_id: int):
        slide = _slide_for(request, slide_id)
        data = self.CellCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = slide.images.filter(pk=data.validated_data["image"]).first()
        if image is None:
            raise ApplicationError("That image is not part of this slide.")
        cell = cell_create(image=image, box=data.validated_data["box"], label=data.validated_data["label"],
                           difficult=data.validated_data["difficult"], user=request.user)
        return Response(CellOutputSerializer(cell).data, status=status.HTTP_201_CREATED)


class SlideCellRestoreApi(GenericAPIView):
    serializer_class = CellOutputSerializer
    permission_classes = [require("cells.delete_cell")]  # whoever may delete a box may undo it

    class CellRestoreSerializer(serializers.Serializer):
        cell = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="the deleted cell's id")

    @extend_schema(summary="Bring back a deleted cell box as it was (undo a deletion)", request=CellRestoreSerializer,
                   responses={201: CellOutputSerializer})
    def post(self, request, slide_id: int):
        slide = _slide_for(request, slide_id)
        data = self.CellRestoreSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cell = cell_restore(slide=slide, cell_id=data.validated_data["cell"], user=request.user)
        return Response(CellOutputSerializer(cell).data, status=status.HTTP_201_CREATED)


class CellDetailApi(GenericAPIView):
    serializer_class = CellOutputSerializer

    class CellUpdateSerializer(serializers.Serializer):
        reviewed_class = serializers.CharField(required=False, max_length=64)
        box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4, required=False)
        difficult = serializers.BooleanField(required=False)

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [require("cells.delete_cell")()]
        if self.request.method == "PATCH":
            # a body that is no JSON object (null, a list, a string) is refused by the serializer (400)
            body = self.request.data if isinstance(self.request.data, Mapping) else {}
            needs = []
            if "box" in body or "difficult" in body:
                needs.append("cells.change_cell")
            if "reviewed_class" in body or not needs:
                needs.append("cells.reclassify_cell")
            return [require(*needs)()]
        return [require("cells.view_cell")()]

    @extend_schema(summary="One cell", responses=CellOutputSerializer)
    def get(self, request, pk: int):
        return Response(CellOutputSerializer(_cell_for(request, pk)).data)

    @extend_schema(summary="Reclassify a cell, move its box or mark it difficult", request=CellUpdateSerializer,
                   responses=CellOutputSerializer)
    def patch(self, request, pk: int):
        cell = _cell_for(request, pk)
        data = self.CellUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not data.validated_data:
            raise ApplicationError("Send reviewed_class, box and/or difficult.")
        cell = cell_update(cell=cell, user=request.user, **data.validated_data)
        return Response(CellOutputSerializer(cell).data)

    @extend_schema(summary="Delete a cell (its history is kept)", responses={204: None})
    def delete(self, request, pk: int):
        cell_delete(cell=_cell_for(request, pk), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CellHeatmapApi(GenericAPIView):
    permission_classes = [require("cells.view_cell")]

    @extend_schema(summary="The cell's attention heatmap over its crop (PNG)", responses={(200, "image/png"): bytes})
    def get(self, request, pk: int):
        cell = _cell_for(request, pk)
        if not cell.heatmap:
            raise ApplicationError("This cell has no heatmap.", status_code=404)
        return FileResponse(cell.heatmap.open("rb"), content_type="image/png")


class CellCropApi(GenericAPIView):
    permission_classes = [require("cells.view_cell")]

    @extend_schema(summary="The cell cut from the full-resolution image (JPEG; kept for scans, whose page shows a "
                           "reduced preview)", responses={(200, "image/jpeg"): bytes})
    def get(self, request, pk: int):
        cell = _cell_for(request, pk)
        if not cell.crop:
            raise ApplicationError("This cell has no stored crop: its image is shown at full resolution.",
                                   status_code=404)
        return FileResponse(cell.crop.open("rb"), content_type="image/jpeg")


class SlideDifferentialApi(GenericAPIView):
    permission_classes = [require("cells.view_cell")]

    @extend_schema(
        summary="The white-cell differential of a slide; nucleated red cells and platelets counted beside it",
        responses=inline_serializer(
            "Differential",
            {
                "total": serializers.IntegerField(help_text="white cells counted"),
                "rows": inline_serializer(
                    "DifferentialRow",
                    {"class": serializers.CharField(), "count": serializers.IntegerField(),
                     "percent": serializers.FloatField(help_text="of the white cells")},
                    many=True,
                ),
                "other": inline_serializer(
                    "DifferentialOther",
                    {"class": serializers.CharField(), "count": serializers.IntegerField(),
                     "per_100_white": serializers.FloatField(allow_null=True,
                                                             help_text="per 100 white cells; null where there is none")},
                    many=True,
                ),
            },
        ),
    )
    def get(self, request, slide_id: int):
        return Response(slide_differential(slide=_slide_for(request, slide_id)))


class SlideHistoryApi(GenericAPIView):
    permission_classes = [require("cells.view_cell")]

    @extend_schema(
        summary="Every change to the slide's cells: who, when, before, after",
        parameters=[OpenApiParameter("cell", int, description="one cell's changes only (its id, also once deleted)")],
        responses=inline_serializer(
            "CellEvent",
            {
                "cell": serializers.IntegerField(),
                "action": serializers.CharField(),
                "actor": serializers.CharField(allow_null=True),
                "before": serializers.JSONField(),
                "after": serializers.JSONField(),
                "at": serializers.DateTimeField(),
            },
            many=True,
        ),
    )
    def get(self, request, slide_id: int):
        cell = request.query_params.get("cell")
        if cell is not None and not (cell.isascii() and cell.isdigit()):
            raise ApplicationError(f"cell is a cell's id (a whole number), not {cell[:40]!r}.")
        events = cell_history(slide=_slide_for(request, slide_id), cell_id=int(cell) if cell is not None else None)
        page = self.paginate_queryset(events)
        return self.get_paginated_response(
            [
                {"cell": e.cell_ref, "action": e.action, "actor": e.actor.username if e.actor_id else None,
                 "before": e.before, "after": e.after, "at": e.at}
                for e in page
            ]
        )


MAX_EXPORT_SLIDES = 500


def _export_slides(request):
    """The slides named by ``slide`` (repeated or comma-separated ids; every one the user's lab's),
    or all the lab's slides."""
    raw = [part for value in request.query_params.getlist("slide") for part in value.split(",") if part.strip()]
    try:
        ids = sorted({int(part) for part in raw})
    except ValueError:
        raise ApplicationError(f"slide must be slide ids, got {', '.join(raw)!r}.") from None
    slides = slide_list(user=request.user)
    if ids:
        if any(not (0 < i < 2**63) for i in ids):
            raise ApplicationError("slide ids are positive integers.")
        slides = slides.filter(pk__in=ids)
        missing = sorted(set(ids) - set(slides.values_list("pk", flat=True)))
        if missing:
            raise ApplicationError(f"No such slide: {', '.join(map(str, missing))}.", status_code=404)
    if slides.count() > MAX_EXPORT_SLIDES:
        raise ApplicationError(f"At most {MAX_EXPORT_SLIDES} slides an export; choose them with slide=ID,ID,...")
    return Slide.objects.filter(pk__in=slides.values("pk"))


def _zip_response(zs: ZipStream, filename: str) -> StreamingHttpResponse:
    """The zip sent as it is made: the download starts at once, and shows its progress where its size is known."""
    response = StreamingHttpResponse(zs, content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    if zs.sized:
        response["Content-Length"] = str(len(zs))
    return response


_EXPORT_PARAMS = [
    OpenApiParameter("slide", str, description="slide ids (repeated or comma-separated); all the lab's slides if none"),
    OpenApiParameter("which", str, enum=list(WHICH), description="confirmed: cells whose class a person gave or "
                     "confirmed (reviewed, or on a signed-off slide); all: the model's answers too"),
]


class _FormatIsNoRenderer(DefaultContentNegotiation):
    """``?format=`` names the box format here, not a renderer: answers (errors) are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = next((r for r in renderers if r.format == "json"), renderers[0])
        return renderer, renderer.media_type


class ExportBoxesApi(GenericAPIView):
    permission_classes = [require("cells.view_cell")]
    content_negotiation_class = _FormatIsNoRenderer

    @extend_schema(
        summary="The slides' images and cell boxes as a localization training set (zip)",
        description="Pascal VOC (Annotations/ + JPEGImages/), COCO (annotations.json + images/) or YOLO "
                    "(images/ + labels/ + classes.txt), as `python -m ml.localization train --data` reads them.",
        parameters=[
            OpenApiParameter("format", str, enum=list(BOX_FORMATS), required=True),
            OpenApiParameter("classes", bool, description="label each box with its cell's class instead of WBC"),
            OpenApiParameter("signed_off", bool, description="only the slides signed off (every box confirmed)"),
            _EXPORT_PARAMS[0],
        ],
        responses={(200, "application/zip"): bytes},
    )
    def get(self, request):
        fmt = request.query_params.get("format", "")
        def flag(name: str) -> bool:
            return request.query_params.get(name, "").lower() in {"1", "true", "yes"}

        buf = boxes_export(slides=_export_slides(request), fmt=fmt, with_classes=flag("classes"),
                           signed_off=flag("signed_off"))
        return _zip_response(buf, f"leukolab-boxes-{fmt}.zip")


class ExportCellsApi(GenericAPIView):
    permission_classes = [require("cells.view_cell")]

    @extend_schema(
        summary="The slides' classified cells as a classification training set (zip)",
        description="Class-per-folder crops with boxes.csv (each crop's cell box), as "
                    "`python -m ml.classification train --data` reads them.",
        parameters=_EXPORT_PARAMS,
        responses={(200, "application/zip"): bytes},
    )
    def get(self, request):
        buf = crops_export(slides=_export_slides(request), which=request.query_params.get("which", "confirmed"))
        return _zip_response(buf, "leukolab-cells.zip")


class BoxImportSerializer(serializers.Serializer):
    files = serializers.ListField(child=serializers.FileField(), help_text="Pascal VOC .xml, COCO .json or YOLO .txt")
    labels = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="a YOLO file's class names in order, comma-separated")


class SlideBoxesImportApi(GenericAPIView):
    permission_classes = [require("cells.add_cell")]
    parser_classes = [MultiPartParser]
    serializer_class = BoxImportSerializer  # what OPTIONS describes

    @extend_schema(
        summary="Add the white cells of box files to a slide, as drawn by you",
        request={"multipart/form-data": BoxImportSerializer},
        responses=inline_serializer("BoxImport", {"added": serializers.IntegerField(), "skipped": serializers.DictField()}),
    )
    def post(self, request, slide_id: int):
        slide = _slide_for(request, slide_id)
        files = request.FILES.getlist("files")
        labels = [x.strip() for x in request.data.get("labels", "").split(",") if x.strip()]
        return Response(boxes_import(slide=slide, files=files, user=request.user, labels=labels or None))
