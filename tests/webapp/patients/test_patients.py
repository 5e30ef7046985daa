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


def test_an_identifier_typed_in_another_case_is_the_same_patient(api_as):
    hema = api_as("hematologist")
    first = hema.post("/api/patients/", {"identifier": "ab-12"}, format="json").json()
    again = hema.post("/api/patients/", {"identifier": "AB-12"}, format="json")
    assert again.status_code == 400
    assert again.json()["message"] == "A patient with identifier 'AB-12' already exists in your lab (as 'ab-12')."
    assert again.json()["extra"] == {"patient": first["id"]}
    assert [p["identifier"] for p in hema.get("/api/patients/?search=AB-1").json()["results"]] == ["ab-12"]


def test_the_database_keeps_one_identifier_whatever_its_case(make_user):
    """The unique index itself ignores case (a row written past the service meets it)."""
    from django.db import IntegrityError, transaction

    from webapp.patients.models import Patient

    user = make_user("hematologist")
    Patient.objects.create(lab=user.profile.lab, identifier="Q-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Patient.objects.create(lab=user.profile.lab, identifier="q-1")


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


@pytest.mark.django_db(transaction=True)
def test_migrating_names_the_identifiers_that_differ_only_in_case():
    """An installation whose patients "P-1" and "p-1" were two is told which to rename, not given an IntegrityError."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("patients", "0002_deletion")], [("patients", "0003_identifier_any_case")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    lab = apps.get_model("accounts", "Lab").objects.create(name="Twin lab")
    patients = apps.get_model("patients", "Patient").objects
    patients.create(lab=lab, identifier="P-1")
    patients.create(lab=lab, identifier="p-1")
    executor = MigrationExecutor(connection)
    with pytest.raises(RuntimeError, match=r"differ only in case: 'P-1', 'p-1' \(lab \d+\)"):
        executor.migrate(after)
    patients.filter(identifier="p-1").update(identifier="p-1b")
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    assert MigrationExecutor(connection).loader.applied_migrations.keys() >= set(after)
