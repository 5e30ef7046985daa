"""Loaded models of the active versions, kept per process and reloaded when the active version changes."""
from __future__ import annotations

import threading

from webapp.registry.models import ModelVersion
from webapp.registry.selectors import model_version_active, model_version_local_path

_lock = threading.Lock()
_loaded: dict[tuple, object] = {}


def _load(mv: ModelVersion):
    key = (mv.pk, mv.kind, mv.architecture, mv.version, mv.artifact.name or "")
    with _lock:
        if key not in _loaded:
            _set_threads()
            if mv.kind == ModelVersion.Kind.LOCALIZER:
                from ml.localization import load_localizer

                path = model_version_local_path(model_version=mv)
                _loaded[key] = load_localizer(str(path) if path else mv.architecture)
            else:
                from ml.classification import load_classifier

                path = model_version_local_path(model_version=mv)
                if path is None:
                    raise ValueError(f"classifier version {mv} has no artifact file")
                from django.conf import settings

                _loaded[key] = load_classifier(path, prior=settings.LEUKOLAB_CLASS_PRIOR)
        return _loaded[key]


def _set_threads() -> None:
    """Torch threads per job process: oversubscribed cores make inference many times slower."""
    import torch
    from django.conf import settings

    if torch.get_num_threads() != settings.LEUKOLAB_TORCH_THREADS:
        torch.set_num_threads(settings.LEUKOLAB_TORCH_THREADS)


def active_localizer() -> tuple[ModelVersion, object]:
    from webapp.registry.services import model_version_ensure_classical

    mv = model_version_active(kind=ModelVersion.Kind.LOCALIZER) or model_version_ensure_classical()
    return mv, _load(mv)


def active_classifier() -> tuple[ModelVersion | None, object | None]:
    mv = model_version_active(kind=ModelVersion.Kind.CLASSIFIER)
    return (mv, _load(mv)) if mv is not None else (None, None)
