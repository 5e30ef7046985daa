from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp.common.files import undone_on_failure
from webapp.registry.models import ModelFigure, ModelVersion

logger = logging.getLogger(__name__)


def model_version_register(
    *,
    kind: str,
    architecture: str,
    version: str,
    artifact_path: Path | None = None,
    parameters: dict | None = None,
    metrics: dict | None = None,
    figures: list[tuple[Path, str]] | None = None,
    activate: bool = False,
) -> ModelVersion:
    """``figures``: PNG files of the run and their titles, kept with the version under their file's stem.
    All or nothing: where it fails, the files it stored go again."""
    with undone_on_failure() as written, transaction.atomic():
        mv = ModelVersion(
            kind=kind, architecture=architecture, version=version, parameters=parameters or {},
            metrics=_json_safe(metrics or {}),
        )
        mv.full_clean(exclude=["artifact"])
        if artifact_path is not None:
            with open(artifact_path, "rb") as fh:
                mv.artifact.save(Path(artifact_path).name, File(fh), save=False)
            written.append((mv.artifact.storage, mv.artifact.name))
        mv.save()
        _figures_save(model_version=mv, figures=figures or [], written=written)
        if activate:
            model_version_promote(model_version=mv)
        return mv


def _json_safe(value):
    """``value`` with every number JSON cannot hold (NaN, infinity: a score of nothing found) as None."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _figures_save(*, model_version: ModelVersion, figures: list[tuple[Path, str]], written: list) -> None:
    """Keep PNG files with a version under their file's stem, each replacing the version's figure of that name
    (its old file deleted once committed); each file stored is added to ``written`` (:func:`undone_on_failure`)."""
    for path, title in figures:
        name = Path(path).stem
        old = ModelFigure.objects.filter(model_version=model_version, name=name).first()
        if old is not None:
            storage, stale = old.image.storage, old.image.name
            transaction.on_commit(lambda storage=storage, stale=stale: storage.delete(stale))
            old.delete()
        figure = ModelFigure(model_version=model_version, name=name, title=title)
        with open(path, "rb") as fh:
            figure.image.save(f"{model_version.kind}-{model_version.pk}-{Path(path).name}", File(fh), save=False)
        written.append((figure.image.storage, figure.image.name))
        figure.save()


def model_version_scores_add(*, model_version: ModelVersion, metrics: dict,
                             figures: list[tuple[Path, str]] | None = None) -> ModelVersion:
    """Add figures measured after a version was registered (e.g. the classical localizer scored on annotated
    fields) to its metrics, and their plots (replacing those of the same name)."""
    with undone_on_failure() as written, transaction.atomic():
        mv = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
        mv.metrics = {**mv.metrics, **_json_safe(metrics)}
        mv.save(update_fields=["metrics"])
        _figures_save(model_version=mv, figures=figures or [], written=written)
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


def classifier_register_run(*, run: Path, parameters: dict, activate: bool) -> ModelVersion:
    """Register the classifier a training run made (its checkpoint, classes and figures)."""
    from ml.classification import load_classifier
    from webapp.registry.selectors import run_checkpoint, run_figures

    checkpoint = run_checkpoint(kind=ModelVersion.Kind.CLASSIFIER, run=Path(run))
    classifier = load_classifier(checkpoint)
    return model_version_register(
        kind=ModelVersion.Kind.CLASSIFIER,
        architecture=classifier.architecture,
        version=classifier.version,
        artifact_path=checkpoint,
        parameters={"classes": list(classifier.classes), **parameters},
        metrics=dict(classifier.metrics or {}),
        figures=run_figures(kind=ModelVersion.Kind.CLASSIFIER, run=Path(run)),
        activate=activate,
    )


RETRAIN_JOB = "classifier_retrain"


def classifier_retrain_request(*, user=None):
    """Queue a retraining of the classifier (one at a time: a retraining queued or running is returned)."""
    from webapp.accounts.selectors import user_lab
    from webapp.jobs.services import job_enqueue

    return job_enqueue(kind=RETRAIN_JOB, key="retrain:classifier", params={},
                       lab=user_lab(user) if user is not None else None, created_by=user)


def classifier_retrain(*, job_id: int | None = None, progress=None) -> ModelVersion:
    """Train the default recipe again on the training data (``LEUKOLAB_TRAIN_DATA``, PBC by default) and every
    cell whose class a person gave or confirmed, within ``LEUKOLAB_RETRAIN_BUDGET_S``, and register the result
    as a candidate: an admin compares it with the active version and makes it active, or not. Its held-out
    figures are the training data's, as the active version's are, so the two compare."""
    from ml.classification import train_default
    from webapp.cells.interchange import crops_write
    from webapp.jobs.services import PermanentJobError
    from webapp.slides.models import Slide

    report = progress or (lambda fraction, message="": None)
    base = Path(settings.LEUKOLAB_TRAIN_DATA or settings.LEUKOLAB_DATASETS / "pbc")
    if not base.is_dir():
        raise PermanentJobError(f"No training data at {base}: set LEUKOLAB_TRAIN_DATA to a class-per-folder image folder.")
    out = settings.LEUKOLAB_MODEL_DIR / f"retrained-classifier-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory() as tmp:
        report(0.0, "gathering the reviewed cells")
        reviewed = Path(tmp) / "reviewed"
        n = crops_write(slides=Slide.objects.all(), folder=reviewed)
        report(0.05, f"training on {base.name} and {n} reviewed cell{'s' if n != 1 else ''}")
        try:
            run = train_default(base, out, time_budget_s=settings.LEUKOLAB_RETRAIN_BUDGET_S, extra=[reviewed] if n else None,
                                progress=lambda f, m: report(0.05 + 0.9 * f, m))
        except ValueError as exc:  # e.g. a reviewed class the training data does not have
            raise PermanentJobError(f"The retraining cannot use these cells: {exc}") from exc
    mv = classifier_register_run(run=run, parameters={"trained_by": "retraining", "data": str(base), "reviewed_cells": n},
                                 activate=False)
    report(1.0, f"{mv.version} registered as a candidate")
    logger.info("classifier %s retrained on %s and %d reviewed cells", mv.version, base, n)
    return mv


DETECTOR_JOB = "detector_train"


def detector_train_request(*, user=None):
    """Queue a training of the deep detector (one at a time: a training queued or running is returned)."""
    from webapp.accounts.selectors import user_lab
    from webapp.jobs.services import job_enqueue

    return job_enqueue(kind=DETECTOR_JOB, key="train:detector", params={},
                       lab=user_lab(user) if user is not None else None, created_by=user)


def detector_annotated_slides():
    """The slides whose boxes people have looked at: signed off, or with a box a person drew, moved or deleted."""
    from webapp.cells.models import CellEvent
    from webapp.slides.models import Slide

    touched = CellEvent.objects.filter(actor__isnull=False, action__in=[
        CellEvent.Action.CREATE, CellEvent.Action.MOVE, CellEvent.Action.DELETE]).values("slide_id")
    return Slide.objects.filter(Q(signed_off_at__isnull=False) | Q(pk__in=touched))


def detector_train(*, job_id: int | None = None, progress=None) -> ModelVersion:
    """Train the deep detector on the annotated fields (``LEUKOLAB_DETECTOR_DATA``, BCCD by default: the
    training part of its fixed split) and every field of the slides whose boxes people have looked at
    (:func:`detector_annotated_slides`; scans left out), within ``LEUKOLAB_DETECTOR_BUDGET_S``; score it on
    the folder's test part, as ``make run`` scores the classical localizer, and register it as a candidate
    localizer with its scores and plots."""
    from ml.localization import load_localizer
    from ml.localization.data import load_split
    from ml.localization.report import score_localizer
    from ml.localization.train import train_default
    from webapp.cells.interchange import boxes_write
    from webapp.jobs.services import PermanentJobError
    from webapp.registry.selectors import run_figures

    report = progress or (lambda fraction, message="": None)
    base = Path(settings.LEUKOLAB_DETECTOR_DATA or settings.LEUKOLAB_DATASETS / "bccd")
    if not base.is_dir():
        raise PermanentJobError(f"No annotated fields at {base}: set LEUKOLAB_DETECTOR_DATA to a VOC, COCO or YOLO folder.")
    try:
        test = load_split(base, "test")
    except ValueError as exc:
        raise PermanentJobError(f"{base}: {exc}") from exc
    out = settings.LEUKOLAB_MODEL_DIR / f"detector-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory() as tmp:
        report(0.0, "gathering the annotated fields")
        lab = Path(tmp) / "annotated"
        n = boxes_write(slides=detector_annotated_slides(), folder=lab, max_side=settings.LEUKOLAB_PREVIEW_MAX_SIDE)
        report(0.02, f"training on {base.name} and {n} annotated field{'s' if n != 1 else ''}")
        run = train_default(base, out, time_budget_s=settings.LEUKOLAB_DETECTOR_BUDGET_S, part="train",
                            extra=[lab] if n else (),
                            progress=lambda f, m="": report(0.02 + 0.9 * f, m))
    report(0.93, f"scoring on {base.name}'s {len(test)} test fields")
    detector = load_localizer(str(run))
    scores = score_localizer(detector, test, run, scored_on=f"{base.name} test ({len(test)} fields)") if test else {}
    mv = model_version_register(
        kind=ModelVersion.Kind.LOCALIZER, architecture=detector.architecture, version=detector.version,
        artifact_path=run / "model.pt", metrics={**detector.metrics, **scores},
        parameters={"classes": ["WBC"], "trained_by": "training", "data": str(base), "annotated_fields": n},
        figures=run_figures(kind=ModelVersion.Kind.LOCALIZER, run=run), activate=False)
    report(1.0, f"{mv.version} registered as a candidate")
    logger.info("detector %s trained on %s and %d annotated fields", mv.version, base, n)
    return mv


RETRAIN_SCHEDULE = "Retrain the classifier"  # the periodic task (django-celery-beat) the Models page sets
RETRAIN_SCHEDULE_TASK = "classifier_retrain_scheduled"


@transaction.atomic
def classifier_retrain_schedule_set(*, every: str, at=None, day_of_week: int | None = None,
                                    timezone_name: str = "UTC"):
    """Retrain the classifier every day or every week (``day_of_week``: 0 Sunday to 6 Saturday) at the time
    of day ``at`` in ``timezone_name``, as a periodic task beat runs; ``every="never"`` takes the schedule
    away. The periodic task, or None."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    task = PeriodicTask.objects.select_for_update().filter(name=RETRAIN_SCHEDULE).first()
    old = task.crontab if task is not None else None
    if every == "never":
        if task is not None:
            task.delete()
    else:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=str(at.minute), hour=str(at.hour), day_of_week="*" if every == "day" else str(day_of_week),
            day_of_month="*", month_of_year="*", timezone=timezone_name,
        )
        task = task or PeriodicTask(name=RETRAIN_SCHEDULE, task=RETRAIN_SCHEDULE_TASK)
        task.crontab, task.enabled = crontab, True
        task.save()
    if old is not None and not PeriodicTask.objects.filter(crontab=old).exists():
        old.delete()  # a time no schedule uses any more
    return task if every != "never" else None
