from __future__ import annotations

from collections import Counter

from django.db.models import QuerySet

from webapp.cells.models import Cell, CellEvent

UNCLASSIFIED = "unclassified"


def cell_list(*, slide) -> QuerySet[Cell]:
    return Cell.objects.filter(slide=slide).select_related("model_version", "reviewed_by")


def cell_history(*, slide) -> QuerySet[CellEvent]:
    return CellEvent.objects.filter(slide=slide).select_related("actor")


def slide_differential(*, slide) -> dict:
    """Counts and percentages per class (the reviewed class where there is one, else the predicted)."""
    counts = Counter(c.effective_class or UNCLASSIFIED for c in cell_list(slide=slide))
    total = sum(counts.values())
    rows = [
        {"class": label, "count": n, "percent": round(100.0 * n / total, 1) if total else 0.0}
        for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {"total": total, "rows": rows}
