from collections.abc import Mapping

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from webapp.cells.models import Cell
from webapp.cells.selectors import cell_history, cell_list, cells_awaiting_answer, slide_differential
from webapp.cells.services import cell_create, cell_delete, cell_move, cell_reclassify
from webapp.common.exceptions import ApplicationError
from webapp.common.permissions import require
from webapp.slides.selectors import slide_list


class CellOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    box = serializers.ListField(child=serializers.FloatField())
    source = serializers.CharField()
    predicted_class = serializers.CharField(allow_null=True)
    probabilities = serializers.DictField(child=serializers.FloatField())
    confidence = serializers.FloatField(allow_null=True)
    model_version = serializers.SerializerMethodField()
    reviewed_class = serializers.CharField(allow_null=True)
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
        return cell.effective_class or None

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
        cell = cell_create(image=image, box=data.validated_data["box"], label=data.validated_data["label"], user=request.user)
        return Response(CellOutputSerializer(cell).data, status=status.HTTP_201_CREATED)


class CellDetailApi(GenericAPIView):
    serializer_class = CellOutputSerializer

    class CellUpdateSerializer(serializers.Serializer):
        reviewed_class = serializers.CharField(required=False, max_length=64)
        box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4, required=False)

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [require("cells.delete_cell")()]
        if self.request.method == "PATCH":
            # a body that is no JSON object (null, a list, a string) is refused by the serializer (400)
            body = self.request.data if isinstance(self.request.data, Mapping) else {}
            needs = []
            if "box" in body:
                needs.append("cells.change_cell")
            if "reviewed_class" in body or not needs:
                needs.append("cells.reclassify_cell")
            return [require(*needs)()]
        return [require("cells.view_cell")()]

    @extend_schema(summary="One cell", responses=CellOutputSerializer)
    def get(self, request, pk: int):
        return Response(CellOutputSerializer(_cell_for(request, pk)).data)

    @extend_schema(summary="Reclassify a cell or move its box", request=CellUpdateSerializer, responses=CellOutputSerializer)
    def patch(self, request, pk: int):
        cell = _cell_for(request, pk)
        data = self.CellUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not data.validated_data:
            raise ApplicationError("Send reviewed_class and/or box.")
        if "box" in data.validated_data:
            cell = cell_move(cell=cell, box=data.validated_data["box"], user=request.user)
        if "reviewed_class" in data.validated_data:
            cell = cell_reclassify(cell=cell, label=data.validated_data["reviewed_class"], user=request.user)
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
        summary="Differential count of a slide",
        responses=inline_serializer(
            "Differential",
            {
                "total": serializers.IntegerField(),
                "rows": inline_serializer(
                    "DifferentialRow",
                    {"class": serializers.CharField(), "count": serializers.IntegerField(), "percent": serializers.FloatField()},
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
        events = cell_history(slide=_slide_for(request, slide_id))
        page = self.paginate_queryset(events)
        return self.get_paginated_response(
            [
                {"cell": e.cell_ref, "action": e.action, "actor": e.actor.username if e.actor_id else None,
                 "before": e.before, "after": e.after, "at": e.at}
                for e in page
            ]
        )
