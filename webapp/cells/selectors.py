from __future__ import annotations

from collections import Counter

from django.conf import settings
from django.db.models import QuerySet

from webapp.cells.models import Cell, CellEvent

UNCLASSIFIED = "unclassified"


def cell_list(*, slide) -> QuerySet[Cell]:
    return Cell.objects.filter(slide=slide).select_related("model_version", "reviewed_by")


def cells_awaiting_answer(*, slide=None, cell=None) -> set[int]:
    """The cells of a slide (or the one cell) whose model answer for the box as it is now is queued
    or being computed (``webapp.cells.services.cell_answer_request``)."""
    from webapp.jobs.models import Job

    jobs = Job.objects.filter(kind="cell_classify", status__in=(Job.Status.QUEUED, Job.Status.RUNNING),
                              params__slide_id=slide.pk if slide is not None else cell.slide_id)
    ids = {entry["id"] for params in jobs.values_list("params", flat=True) for entry in params.get("cells", [])}
    return ids if cell is None else ids & {cell.pk}


def cell_history(*, slide, cell_id: int | None = None) -> QuerySet[CellEvent]:
    """The changes to the slide's cells, oldest first; ``cell_id``: to that cell alone (deleted or not)."""
    events = CellEvent.objects.filter(slide=slide).select_related("actor")
    return events if cell_id is None else events.filter(cell_ref=cell_id)


def slide_differential(*, slide) -> dict:
    """The white-cell differential: counts and percentages per class of the white cells (``rows``, adding up
    to ``total``), a cell counting by its reviewed class where there is one, else the predicted,
    ``unidentified`` where the model is unsure (``LEUKOLAB_UNIDENTIFIED_BELOW``), ``unclassified`` where
    there is no class. Cells of a class that is no white cell (``LEUKOLAB_NOT_WHITE``: nucleated red cells,
    platelets) are counted beside it (``other``), per 100 white cells as a lab reports them, and are not in
    its percentages."""
    counts = Counter(c.shown_class or UNCLASSIFIED for c in cell_list(slide=slide))
    other = {label: n for label, n in counts.items() if label.lower() in settings.LEUKOLAB_NOT_WHITE}
    white = {label: n for label, n in counts.items() if label not in other}
    total = sum(white.values())

    def by_count(items: dict) -> list:
        return sorted(items.items(), key=lambda kv: (-kv[1], kv[0]))

    return {
        "total": total,
        "rows": [{"class": label, "count": n, "percent": round(100.0 * n / total, 1) if total else 0.0}
                 for label, n in by_count(white)],
        "other": [{"class": label, "count": n, "per_100_white": round(100.0 * n / total, 1) if total else None}
                  for label, n in by_count(other)],
    }
