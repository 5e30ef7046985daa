from __future__ import annotations

from pathlib import Path

from django.core.files import File
from django.db import transaction
from django.utils import timezone

from webapp.registry.models import ModelVersion


@transaction.atomic
def model_version_register(
    *,
    kind: str,
    architecture: str,
    version: str,
    artifact_path: Path | None = None,
    parameters: dict | None = None,
    metrics: dict | None = None,
    activate: bool = False,
) -> ModelVersion:
    mv = ModelVersion(
        kind=kind, architecture=architecture, version=version, parameters=parameters or {}, metrics=metrics or {}
    )
    mv.full_clean(exclude=["artifact"])
    if artifact_path is not None:
        with open(artifact_path, "rb") as fh:
            mv.artifact.save(Path(artifact_path).name, File(fh), save=False)
    mv.save()
    if activate:
        model_version_promote(model_version=mv)
    return mv


@transaction.atomic
def model_version_promote(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version the active one of its kind; the previously active one is retired. Every version
    of the kind is held first, so two promotions at once follow each other (the second retires the first's
    choice) instead of the second failing on the one-active-version rule."""
    list(ModelVersion.objects.select_for_update().filter(kind=model_version.kind).values_list("pk", flat=True))
    ModelVersion.objects.filter(kind=model_version.kind, status=ModelVersion.Status.ACTIVE).exclude(
        pk=model_version.pk
    ).update(status=ModelVersion.Status.RETIRED)
    model_version.status = ModelVersion.Status.ACTIVE
    model_version.activated_at = timezone.now()
    model_version.save(update_fields=["status", "activated_at"])
    return model_version


def model_version_ensure_classical() -> ModelVersion:
    """The classical localizer needs no training: register it, active, when no localizer is active."""
    with transaction.atomic():
        active = ModelVersion.objects.select_for_update().filter(kind=ModelVersion.Kind.LOCALIZER, status=ModelVersion.Status.ACTIVE).first()
        if active is not None:
            return active
        # two first analyses at once both find no row to lock: get_or_create takes the other's row
        # where its insert came first, instead of failing on the unique version
        mv, _ = ModelVersion.objects.get_or_create(
            kind=ModelVersion.Kind.LOCALIZER, version="classical-1",
            defaults={"architecture": "classical", "parameters": {"method": "classical"}},
        )
        return model_version_promote(model_version=mv)
