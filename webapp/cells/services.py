from __future__ import annotations

import io

import numpy as np
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from webapp.cells.models import Cell, CellEvent
from webapp.common.exceptions import ApplicationError


def cell_snapshot(cell: Cell) -> dict:
    return {
        "box": cell.box,
        "predicted_class": cell.predicted_class or None,
        "reviewed_class": cell.reviewed_class or None,
        "source": cell.source,
    }


def _event(*, cell: Cell, action: str, actor: User | None, before: dict | None, after: dict | None) -> CellEvent:
    return CellEvent.objects.create(
        cell=cell if action != CellEvent.Action.DELETE else None,
        cell_ref=cell.pk,
        slide_id=cell.slide_id,
        action=action,
        actor=actor,
        before=before,
        after=after,
    )


def _png(array: np.ndarray) -> ContentFile:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=False)
    return ContentFile(buf.getvalue())


CROP_SIDE = 192  # pixels of a stored cell crop (the cell's box, square about its centre, its longer side)


def _jpeg(array: np.ndarray) -> ContentFile:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="JPEG", quality=90)
    return ContentFile(buf.getvalue())


def cell_crops_of(array: np.ndarray, results) -> list[np.ndarray]:
    """Each analysed cell as the slide page frames it (a square about its box's centre, the box's
    longer side; beyond the image's edge its border repeated), cut from the full-resolution image
    ``array``, ``CROP_SIDE`` pixels: for :func:`cells_replace_from_model` where the browser is shown
    a reduced preview of the image."""
    from ml.classification.crop import cell_crop

    height, width = array.shape[:2]
    out = []
    for result in results:
        box = result.box.clip(width, height)
        ok = box.x1 > box.x0 and box.y1 > box.y0
        out.append(cell_crop(array, box, margin=0.0, out_size=CROP_SIDE) if ok else None)
    return out


def _delete_files(cell: Cell) -> None:
    for f in (cell.heatmap, cell.crop):
        if f:
            f.delete(save=False)


@transaction.atomic
def cells_replace_from_model(*, image, results, classifier_version=None, localizer_version=None,
                             crops: list | None = None) -> list[Cell]:
    """Store the analysis of one image, replacing earlier model cells nobody has reviewed or edited.

    Running it twice for the same image leaves one set of cells: a retried job creates no duplicates.
    ``crops``: each result's full-resolution crop (:func:`cell_crops_of`), kept with the cell, where
    the browser is shown a reduced preview of the image (a scan).
    """
    stale = Cell.objects.filter(image=image, source=Cell.Source.MODEL, reviewed_class="").exclude(
        events__actor__isnull=False
    )
    for cell in stale:
        _delete_files(cell)
    stale.delete()
    created = []
    for k, result in enumerate(results):
        box = result.box.clip(image.width, image.height)
        if box.x1 <= box.x0 or box.y1 <= box.y0:
            continue
        cell = Cell(
            slide_id=image.slide_id,
            image=image,
            x0=box.x0, y0=box.y0, x1=box.x1, y1=box.y1,
            source=Cell.Source.MODEL,
            localizer_score=float(box.score),
            predicted_class=result.label or "",
            probabilities={k: float(v) for k, v in (result.probabilities or {}).items()},
            confidence=result.confidence,
            model_version=classifier_version if result.label else None,
            localizer_version=localizer_version,
        )
        if result.heatmap_overlay is not None:
            cell.heatmap.save(f"cell-{image.slide_id}-{image.pk}.png", _png(result.heatmap_overlay), save=False)
        if crops is not None and crops[k] is not None:
            cell.crop.save(f"cell-{image.slide_id}-{image.pk}.jpg", _jpeg(crops[k]), save=False)
        cell.save()
        _event(cell=cell, action=CellEvent.Action.CREATE, actor=None, before=None, after=cell_snapshot(cell))
        created.append(cell)
    return created


def _check_class(cell: Cell, label: str) -> str:
    label = label.strip()
    known = set(cell.probabilities) if cell.probabilities else set()
    if known and label not in known:
        raise ApplicationError(
            f"Unknown class {label!r}; this model's classes are {', '.join(sorted(known))}.", extra={"classes": sorted(known)}
        )
    return label


@transaction.atomic
def cell_reclassify(*, cell: Cell, label: str, user: User) -> Cell:
    before = cell_snapshot(cell)
    cell.reviewed_class = _check_class(cell, label)
    cell.reviewed_by = user
    cell.reviewed_at = timezone.now()
    cell.full_clean(exclude=["heatmap", "crop"])
    cell.save(update_fields=["reviewed_class", "reviewed_by", "reviewed_at", "updated_at"])
    _event(cell=cell, action=CellEvent.Action.RECLASSIFY, actor=user, before=before, after=cell_snapshot(cell))
    return cell


def _check_box(image, box: list[float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
        raise ApplicationError(
            f"The box {box} is not inside the {image.width}x{image.height} image or is empty.", extra={"box": box}
        )
    return x0, y0, x1, y1


@transaction.atomic
def cell_move(*, cell: Cell, box: list[float], user: User) -> Cell:
    before = cell_snapshot(cell)
    cell.x0, cell.y0, cell.x1, cell.y1 = _check_box(cell.image, box)
    if cell.crop:  # it showed the box as it was
        cell.crop.delete(save=False)
    cell.save(update_fields=["x0", "y0", "x1", "y1", "crop", "updated_at"])
    _event(cell=cell, action=CellEvent.Action.MOVE, actor=user, before=before, after=cell_snapshot(cell))
    return cell


@transaction.atomic
def cell_create(*, image, box: list[float], label: str, user: User) -> Cell:
    x0, y0, x1, y1 = _check_box(image, box)
    cell = Cell(slide_id=image.slide_id, image=image, x0=x0, y0=y0, x1=x1, y1=y1, source=Cell.Source.PERSON,
                reviewed_class=label.strip(), reviewed_by=user if label else None,
                reviewed_at=timezone.now() if label else None, created_by=user)
    cell.save()
    _event(cell=cell, action=CellEvent.Action.CREATE, actor=user, before=None, after=cell_snapshot(cell))
    return cell


@transaction.atomic
def cell_delete(*, cell: Cell, user: User) -> None:
    _event(cell=cell, action=CellEvent.Action.DELETE, actor=user, before=cell_snapshot(cell), after=None)
    _delete_files(cell)
    cell.delete()
