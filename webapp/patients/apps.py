from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "webapp.patients"
    label = "patients"
