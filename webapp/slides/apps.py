from django.apps import AppConfig


class SlidesConfig(AppConfig):
    name = "webapp.slides"
    label = "slides"
