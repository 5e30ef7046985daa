"""Leukolab's Celery worker: the app and thin tasks that call the webapp's services."""
