from __future__ import annotations

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from webapp.accounts.selectors import user_lab
from webapp.common.exceptions import ApplicationError
from webapp.patients.models import Deletion, Patient


def patient_create(*, user: User, identifier: str, notes: str = "") -> Patient:
    lab = user_lab(user)
    if lab is None:
        raise ApplicationError("Your account belongs to no lab; ask an admin to add you to one.", status_code=403)
    identifier = identifier.strip()
    taken = ApplicationError(f"A patient with identifier {identifier!r} already exists in your lab.")
    existing = Patient.objects.filter(lab=lab, identifier__iexact=identifier).first()  # the case is no difference
    if existing is not None:
        raise ApplicationError(f"A patient with identifier {identifier!r} already exists in your lab"
                               + (f" (as {existing.identifier!r})." if existing.identifier != identifier else "."),
                               extra={"patient": existing.pk})
    patient = Patient(lab=lab, identifier=identifier, notes=notes, created_by=user)
    patient.full_clean(validate_constraints=False)  # the one that could fail is checked above and by the insert
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError:  # the same identifier created a moment before, by a request that came at once
        raise taken from None
    return patient


def patient_update(*, patient: Patient, notes: str) -> Patient:
    patient.notes = notes
    patient.full_clean()
    patient.save(update_fields=["notes"])
    return patient


def patient_delete(*, patient: Patient, user: User) -> None:
    """Delete a patient who has no slide left (each slide is deleted first, or kept: a signed-off one is a
    report). The patient's row is held while the slides are counted, as an upload holds it before its
    slide is kept (``slides.services.slide_upload``): a slide uploaded meanwhile is either counted here or
    refused there, never deleted with the patient. The deletion is kept (:class:`Deletion`)."""
    with transaction.atomic():
        locked = Patient.objects.select_for_update().filter(pk=patient.pk).first()
        if locked is None:
            raise ApplicationError(f"Patient {patient.identifier} has been deleted already.", status_code=404)
        slides = locked.slides.count()
        if slides:
            raise ApplicationError(
                f"Patient {patient.identifier} has {slides} slide{'s' if slides > 1 else ''}; "
                "delete them first (a signed-off slide is kept, and so is its patient).", status_code=409)
        Deletion.objects.create(lab_id=locked.lab_id, kind=Deletion.Kind.PATIENT, ref=locked.pk,
                                patient_identifier=locked.identifier, deleted_by=user,
                                details={"created_at": locked.created_at.isoformat()})
        locked.delete()
