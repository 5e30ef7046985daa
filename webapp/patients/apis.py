from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from webapp.common.permissions import require
from webapp.patients.selectors import deletion_list, patient_list
from webapp.patients.services import patient_create, patient_delete, patient_update


class PatientOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    identifier = serializers.CharField()
    notes = serializers.CharField()
    created_at = serializers.DateTimeField()
    slide_count = serializers.IntegerField()


class PatientInputSerializer(serializers.Serializer):
    identifier = serializers.RegexField(
        r"^[\w.\-: ]{1,64}$", help_text="Pseudonymous identifier: letters, digits, . - _ : and spaces",
        error_messages={"invalid": "Use up to 64 letters, digits, spaces and . - _ : (a pseudonymous code, "
                                   "not the patient's name)."})
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class PatientListApi(GenericAPIView):
    serializer_class = PatientOutputSerializer

    def get_permissions(self):
        perm = "patients.add_patient" if self.request.method == "POST" else "patients.view_patient"
        return [require(perm)()]

    @extend_schema(
        summary="List your lab's patients",
        parameters=[OpenApiParameter("search", str, description="part of the identifier")],
        responses=PatientOutputSerializer(many=True),
    )
    def get(self, request):
        qs = patient_list(user=request.user, search=request.query_params.get("search"))
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(PatientOutputSerializer(page, many=True).data)

    @extend_schema(summary="Create a patient", request=PatientInputSerializer, responses={201: PatientOutputSerializer})
    def post(self, request):
        data = PatientInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        patient = patient_create(user=request.user, **data.validated_data)
        patient = patient_list(user=request.user).get(pk=patient.pk)
        return Response(PatientOutputSerializer(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(GenericAPIView):
    serializer_class = PatientOutputSerializer

    class PatientUpdateSerializer(serializers.Serializer):
        notes = serializers.CharField(allow_blank=True)

    def get_permissions(self):
        perm = {"PATCH": "patients.change_patient", "DELETE": "patients.delete_patient"}.get(
            self.request.method, "patients.view_patient")
        return [require(perm)()]

    @extend_schema(summary="One patient", responses=PatientOutputSerializer)
    def get(self, request, pk: int):
        return Response(PatientOutputSerializer(get_object_or_404(patient_list(user=request.user), pk=pk)).data)

    @extend_schema(summary="Edit a patient's notes", request=PatientUpdateSerializer, responses=PatientOutputSerializer)
    def patch(self, request, pk: int):
        patient = get_object_or_404(patient_list(user=request.user), pk=pk)
        data = self.PatientUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        patient_update(patient=patient, notes=data.validated_data["notes"])
        return Response(PatientOutputSerializer(patient_list(user=request.user).get(pk=pk)).data)

    @extend_schema(summary="Delete a patient who has no slides", responses={204: None, 409: OpenApiResponse(description="the patient has slides")})
    def delete(self, request, pk: int):
        patient_delete(patient=get_object_or_404(patient_list(user=request.user), pk=pk), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeletionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="slide or patient")
    ref = serializers.IntegerField(help_text="the deleted slide's or patient's id")
    patient_identifier = serializers.CharField()
    details = serializers.DictField(help_text="a slide's images, cells, status and upload")
    deleted_by = serializers.CharField(source="deleted_by.username", allow_null=True, default=None)
    deleted_at = serializers.DateTimeField()


class DeletionListApi(GenericAPIView):
    serializer_class = DeletionOutputSerializer
    permission_classes = [require("patients.view_deletion")]

    @extend_schema(summary="The slides and patients your lab deleted: what, by whom, when (newest first)",
                   responses=DeletionOutputSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(deletion_list(user=request.user))
        return self.get_paginated_response(DeletionOutputSerializer(page, many=True).data)
