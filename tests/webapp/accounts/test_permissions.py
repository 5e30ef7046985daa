"""Each role sees and changes only what it should; anonymous users get nothing."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.helpers import smear_field

ROLES = [None, "hematologist", "annotator", "admin"]


def _upload_payload(patient_id):
    name, data, _ = smear_field(0)
    return {"patient": patient_id, "images": [SimpleUploadedFile(name, data)]}


# (method, url template, payload builder, roles allowed)
CASES = [
    ("get", "/api/patients/", None, {"hematologist", "annotator", "admin"}),
    ("post", "/api/patients/", lambda ids: {"identifier": "NEW-1"}, {"hematologist", "admin"}),
    ("get", "/api/slides/", None, {"hematologist", "annotator", "admin"}),
    ("post", "/api/slides/", lambda ids: _upload_payload(ids["patient"]), {"hematologist", "admin"}),
    ("get", "/api/slides/{slide}/cells/", None, {"hematologist", "annotator", "admin"}),
    ("post", "/api/slides/{slide}/analyze/", None, {"hematologist", "admin"}),
    ("post", "/api/slides/{slide}/sign-off/", None, {"hematologist", "admin"}),
    ("patch", "/api/cells/{cell}/", lambda ids: {"reviewed_class": "lymphocyte"}, {"hematologist", "annotator", "admin"}),
    ("patch", "/api/cells/{cell}/", lambda ids: {"box": [10, 10, 60, 60]}, {"annotator", "admin"}),
    ("delete", "/api/cells/{cell}/", None, {"annotator", "admin"}),
    ("get", "/api/model-versions/", None, {"hematologist", "annotator", "admin"}),
    ("post", "/api/model-versions/{model}/promote/", None, {"admin"}),
    ("get", "/api/jobs/", None, {"hematologist", "annotator", "admin"}),
    ("get", "/api/schema/", None, {"hematologist", "annotator", "admin"}),
    ("get", "/api/auth/me/", None, {"hematologist", "annotator", "admin"}),
]


@pytest.fixture
def ids(analyzed_slide):
    from webapp.registry.models import ModelVersion

    cell = analyzed_slide.cells.first()
    assert cell is not None, "the analysed demo slide should have at least one cell"
    return {
        "patient": analyzed_slide.patient_id,
        "slide": analyzed_slide.pk,
        "cell": cell.pk,
        "model": ModelVersion.objects.first().pk,
    }


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize("method,url,payload,allowed", CASES, ids=[f"{c[0]} {c[1]} {sorted(c[3])}" for c in CASES])
def test_role_matrix(api_as, ids, role, method, url, payload, allowed):
    client = api_as(role, username=f"{role}-tester" if role else None)
    data = payload(ids) if payload else None
    fmt = "multipart" if url == "/api/slides/" and method == "post" else "json"
    response = getattr(client, method)(url.format(**ids), data=data, format=fmt)
    if role in allowed:
        assert response.status_code < 400 or response.status_code == 409, (response.status_code, response.content[:300])
    else:
        expected = {401, 403} if role is None else {403}
        assert response.status_code in expected, (response.status_code, response.content[:300])
        if response["Content-Type"].startswith("application/json"):
            assert "message" in response.json()


def test_other_labs_rows_are_invisible(api_as, other_lab, ids):
    outsider = api_as("admin", username="outsider", user_lab=other_lab)
    assert outsider.get("/api/patients/").json()["count"] == 0
    assert outsider.get("/api/slides/").json()["count"] == 0
    assert outsider.get(f"/api/slides/{ids['slide']}/").status_code == 404
    assert outsider.get(f"/api/slides/{ids['slide']}/cells/").status_code == 404
    assert outsider.patch(f"/api/cells/{ids['cell']}/", {"reviewed_class": "monocyte"}, format="json").status_code == 404
    assert outsider.post("/api/slides/", _upload_payload(ids["patient"]), format="multipart").status_code == 404


def test_login_sets_a_session_and_me_reports_the_role(client, make_user):
    make_user("annotator", username="ann")
    bad = client.post("/api/auth/login/", {"username": "ann", "password": "wrong"}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["message"] == "Wrong username or password."
    ok = client.post("/api/auth/login/", {"username": "ann", "password": "pw-for-tests-123"}, content_type="application/json")
    assert ok.status_code == 200
    me = client.get("/api/auth/me/").json()
    assert me["role"] == "annotator" and me["lab"] == "Test lab"
    assert "cells.change_cell" in me["permissions"] and "slides.add_slide" not in me["permissions"]
