"""Patients: pseudonymous identifiers, one per lab."""
import pytest


@pytest.mark.parametrize("identifier", ["P\u200b-1", "Müller, Hans", "x" * 65, "a/b"])
def test_an_identifier_of_other_characters_is_refused_naming_those_allowed(api_as, identifier):
    r = api_as("hematologist").post("/api/patients/", {"identifier": identifier}, format="json")
    assert r.status_code == 400
    assert r.json()["message"] == ("identifier: Use up to 64 letters, digits, spaces and . - _ : (a pseudonymous "
                                   "code, not the patient's name).")


def test_an_identifier_is_kept_once_per_lab_and_trimmed(api_as, make_user, other_lab):
    hema = api_as("hematologist")
    assert hema.post("/api/patients/", {"identifier": " P-7 "}, format="json").json()["identifier"] == "P-7"
    again = hema.post("/api/patients/", {"identifier": "P-7"}, format="json")
    assert again.status_code == 400 and "already exists" in again.json()["message"]
    elsewhere = api_as("hematologist", username="elsewhere", user_lab=other_lab)
    assert elsewhere.post("/api/patients/", {"identifier": "P-7"}, format="json").status_code == 201
