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


@pytest.mark.django_db(transaction=True)
def test_the_same_patient_created_twice_at_once_is_one_patient_and_a_clear_400(make_user):
    """A double click on "Create patient": the second request's checks run before the first one's insert
    is committed, so its insert meets the unique identifier. It used to fail with an IntegrityError (500)."""
    from django.db import transaction

    from tests.helpers import in_a_thread, needs_row_locks
    from webapp.patients.models import Patient
    from webapp.patients.services import patient_create

    needs_row_locks()
    user = make_user("hematologist")
    outcome = {}
    with transaction.atomic():
        patient_create(user=user, identifier="P-TWICE")
        thread = in_a_thread(lambda: patient_create(user=user, identifier="P-TWICE"), outcome)
        thread.join(timeout=3)  # its insert waits on the first one's uncommitted row
    thread.join(timeout=30)
    assert set(outcome) == {"error"}, outcome
    assert outcome["error"].status_code == 400 and "already exists" in outcome["error"].message
    assert Patient.objects.filter(identifier="P-TWICE").count() == 1
