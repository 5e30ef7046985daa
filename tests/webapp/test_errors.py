"""Under /api/, an address no operation answers and a fault of the server's own still answer in the API's
error shape ({"message", "extra"}), not with Django's HTML pages; elsewhere Django's pages stay."""
import pytest
from django.test import Client


@pytest.mark.parametrize("path", ["/api/nothing-here/", "/api/slides/abc/", "/api/slide-images/1/tiles/0/0_x.jpg",
                                  "/api/model-versions/1/promote/extra/"])
def test_an_api_address_that_names_no_operation_is_a_404_with_a_message(api_as, path):
    response = api_as("hematologist").get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"message": f"No such address in the API: {path}", "extra": {}}


def test_outside_the_api_django_keeps_its_own_404_page(db):
    response = Client().get("/admin/no-such-page/")  # the admin's pages lie outside the single-page app
    assert response.status_code in (302, 404)  # the admin asks for a login first
    assert not response["Content-Type"].startswith("application/json")


def test_a_server_fault_under_the_api_is_a_500_in_the_api_shape_and_is_logged(make_user, monkeypatch, caplog):
    from webapp.patients import apis

    def broken(self, request, *args, **kwargs):
        raise RuntimeError("a fault of the server's own")

    monkeypatch.setattr(apis.PatientListApi, "get", broken)
    client = Client(raise_request_exception=False)
    client.force_login(make_user("hematologist"))
    with caplog.at_level("ERROR", logger="django.request"):
        response = client.get("/api/patients/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["extra"] == {} and "went wrong on the server" in body["message"]
    assert "a fault of the server's own" not in body["message"]  # no internals in the answer
    assert any("a fault of the server's own" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
