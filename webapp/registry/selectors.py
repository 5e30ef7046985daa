from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from webapp.registry.models import ModelVersion


def model_version_list(*, kind: str | None = None) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.prefetch_related("figures")
    return qs.filter(kind=kind) if kind else qs


def model_version_active(*, kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()


def run_checkpoint(*, kind: str, run: Path) -> Path:
    """The artifact file of a trained run: the file itself, or the run folder's checkpoint."""
    if run.is_file():
        return run
    names = ("model.pt",) if kind == ModelVersion.Kind.LOCALIZER else ("best.pt", "last.pt")
    for name in names:
        if (run / name).is_file():
            return run / name
    raise FileNotFoundError(f"{run} holds no {' or '.join(names)}")


def run_figures(*, kind: str, run: Path) -> list[tuple[Path, str]]:
    """The figures a trained run holds beside its artifact, with their titles, in the order its library names them."""
    if kind == ModelVersion.Kind.LOCALIZER:
        from ml.localization.report import RUN_FIGURES
    else:
        from ml.classification.evaluate import RUN_FIGURES
    folder = run if run.is_dir() else run.parent
    return [(folder / name, title) for name, title in RUN_FIGURES.items() if (folder / name).is_file()]


def model_version_local_path(*, model_version: ModelVersion) -> Path | None:
    """A local file for the artifact (copied from remote storage into the model cache when needed)."""
    if not model_version.artifact:
        return None
    try:
        return Path(model_version.artifact.path)
    except NotImplementedError:  # remote storage
        target = settings.LEUKOLAB_MODEL_CACHE / str(model_version.pk) / Path(model_version.artifact.name).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with model_version.artifact.open("rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.rename(target)
        return target


def classifier_retrain_schedule() -> dict:
    """The classifier's retraining schedule as the Models page sets it: ``every`` (never, day or week),
    ``time`` (HH:MM), ``day_of_week`` (0 Sunday to 6 Saturday), ``timezone``, ``last_run_at``, and whether
    a scheduler runs here (``runs``: beat runs beside a Celery worker, where jobs go to Celery)."""
    from django_celery_beat.models import PeriodicTask

    from webapp.registry.services import RETRAIN_SCHEDULE

    runs = settings.LEUKOLAB_TASKS == "celery"
    task = PeriodicTask.objects.select_related("crontab").filter(name=RETRAIN_SCHEDULE, enabled=True).first()
    if task is None or task.crontab is None:
        return {"every": "never", "time": None, "day_of_week": None, "timezone": None, "last_run_at": None, "runs": runs}
    crontab = task.crontab
    weekly = crontab.day_of_week != "*"
    plain = (crontab.hour.isdigit() and crontab.minute.isdigit() and (not weekly or crontab.day_of_week.isdigit())
             and crontab.day_of_month == "*" and crontab.month_of_year == "*")
    if not plain:  # changed on the admin site into a schedule the page does not set: described as it is
        return {"every": "custom", "time": None, "day_of_week": None, "timezone": str(crontab.timezone),
                "last_run_at": task.last_run_at, "runs": runs, "description": str(crontab)}
    return {"every": "week" if weekly else "day", "time": f"{int(crontab.hour):02d}:{int(crontab.minute):02d}",
            "day_of_week": int(crontab.day_of_week) if weekly else None, "timezone": str(crontab.timezone),
            "last_run_at": task.last_run_at, "runs": runs}
