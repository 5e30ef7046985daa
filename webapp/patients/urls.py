from django.urls import path

from webapp.patients.apis import PatientDetailApi, PatientListApi

urlpatterns = [
    path("", PatientListApi.as_view(), name="patient-list"),
    path("<int:pk>/", PatientDetailApi.as_view(), name="patient-detail"),
]
