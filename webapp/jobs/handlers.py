"""What each kind of job runs: a service function taking the job's params and a progress callback."""
from __future__ import annotations

from collections.abc import Callable

Handler = Callable[..., None]
_HANDLERS: dict[str, Callable[[], Handler]] = {}


def register(kind: str, loader: Callable[[], Handler]) -> None:
    _HANDLERS[kind] = loader


def get_handler(kind: str) -> Handler:
    if kind not in _HANDLERS:
        raise KeyError(f"no handler for job kind {kind!r}; known: {', '.join(sorted(_HANDLERS))}")
    return _HANDLERS[kind]()


def _slide_analyze():
    from webapp.slides.services import slide_analyze

    return slide_analyze


register("slide_analyze", _slide_analyze)


def _cell_classify():
    from webapp.cells.services import cell_classify

    return cell_classify


register("cell_classify", _cell_classify)


def _classifier_retrain():
    from webapp.registry.services import classifier_retrain

    return classifier_retrain


register("classifier_retrain", _classifier_retrain)


def _detector_train():
    from webapp.registry.services import detector_train

    return detector_train


register("detector_train", _detector_train)
