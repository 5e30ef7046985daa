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
