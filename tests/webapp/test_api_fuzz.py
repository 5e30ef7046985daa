"""Every operation of the API, fed input generated from its own OpenAPI schema (valid and not), answers
without a server error, and every refusal is a 4xx carrying a message in the API's error shape.

The inputs come from schemathesis (Hypothesis underneath), derandomized so that a run is repeatable. Each
operation is called as an admin (who may do everything within the lab), on a lab with a patient, an
analyzed slide with its cells, and its job; the path's ids name those objects, so the generated bodies
and query strings reach the operations' own checks instead of stopping at a 404.
"""
import base64

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

PASSWORD = "pw-for-tests-123"  # tests/conftest.py's make_user

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = get_wsgi_application()


@pytest.fixture
def same_connection():
    """The WSGI handler keeps the test's database connection (and its transaction) open, as Django's test
    client does."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(make_user, analyzed_slide, same_connection):
    """The ids each path parameter takes, by the path's first part."""
    from webapp.jobs.models import Job

    make_user("admin", username="fuzz-admin")
    cell = analyzed_slide.cells.order_by("pk").first()
    assert cell is not None, "the fixture's smear field has white cells"
    image = analyzed_slide.images.order_by("pk").first()
    return {
        "patients": {"id": analyzed_slide.patient_id},
        "slides": {"id": analyzed_slide.pk, "slide_id": analyzed_slide.pk},
        "slide-images": {"id": image.pk},
        "cells": {"id": cell.pk},
        "jobs": {"id": Job.objects.filter(key=f"analyze:slide:{analyzed_slide.pk}").get().pk},
    }


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_operation_answers_a_server_error(case, world):
    first = case.operation.path.strip("/").split("/")[1]  # /api/<first>/...
    for name, value in world.get(first, {}).items():
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = value
    token = base64.b64encode(f"fuzz-admin:{PASSWORD}".encode()).decode()
    response = case.call(headers={"Authorization": f"Basic {token}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}\n{response.text[:2000]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip(), (
            f"{case.method} {case.formatted_path}: {response.status_code} without a message: {response.text[:500]}")
