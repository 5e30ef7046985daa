from __future__ import annotations

import hashlib
import io
import json

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from webapp.cells.models import Cell, CellEvent
from webapp.common.exceptions import ApplicationError
from webapp.common.files import undone_on_failure
from webapp.jobs.models import Job
from webapp.slides.models import Slide, SlideImage
from webapp.slides.services import slide_hold


def cell_snapshot(cell: Cell) -> dict:
    return {
        "box": cell.box,
        "predicted_class": cell.predicted_class or None,
        "reviewed_class": cell.reviewed_class or None,
        "source": cell.source,
        "difficult": cell.difficult,
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


def _files_of(cell: Cell) -> list[tuple]:
    """The cell's stored files (heatmap, crop) as ``(storage, name)``: what to delete once its change is
    committed, whatever the cell's fields say by then."""
    return [(f.storage, f.name) for f in (cell.heatmap, cell.crop) if f]


def _remove(files: list[tuple]) -> None:
    for storage, name in files:
        storage.delete(name)


def _delete_files(cell: Cell) -> None:
    _remove(_files_of(cell))


def _set_model_answer(cell: Cell, result, *, classifier_version, crop, written: list) -> None:
    """Put a classified ``result`` (``ml.analyze.CellResult``) into an unsaved cell: class,
    probabilities, confidence, the version that answered, heatmap and, for a scan, its crop (each file
    written is added to ``written``, :func:`undone_on_failure`)."""
    cell.predicted_class = result.label or ""
    cell.probabilities = {k: float(v) for k, v in (result.probabilities or {}).items()}
    cell.confidence = result.confidence
    cell.model_version = classifier_version if result.label else None
    if result.heatmap_overlay is not None:
        cell.heatmap.save(f"cell-{cell.slide_id}-{cell.image_id}.png", _png(result.heatmap_overlay), save=False)
        written.append((cell.heatmap.storage, cell.heatmap.name))
    if crop is not None:
        cell.crop.save(f"cell-{cell.slide_id}-{cell.image_id}.jpg", _jpeg(crop), save=False)
        written.append((cell.crop.storage, cell.crop.name))


def cells_replace_from_model(*, image, results, classifier_version=None, localizer_version=None,
                             crops: list | None = None) -> list[Cell]:
    """Store the analysis of one image, replacing earlier model cells nobody has reviewed or edited.

    Running it twice for the same image leaves one set of cells: a retried job creates no duplicates.
    ``crops``: each result's full-resolution crop (:func:`cell_crops_of`), kept with the cell, where
    the browser is shown a reduced preview of the image (a scan). The slide's row is held meanwhile, as a
    person's change to a cell holds it: a cell edited while the analysis ran is kept, never taken for one
    of the model's own. All or nothing: where it fails, the earlier cells and their files stay, and the
    files it wrote go.
    """
    with undone_on_failure() as written, transaction.atomic():
        slide_hold(slide_id=image.slide_id)
        return _cells_replace(image=image, results=results, classifier_version=classifier_version,
                              localizer_version=localizer_version, crops=crops, written=written)


def _cells_replace(*, image, results, classifier_version, localizer_version, crops, written) -> list[Cell]:
    stale = list(Cell.objects.filter(image=image, source=Cell.Source.MODEL, reviewed_class="").exclude(
        events__actor__isnull=False
    ))
    Cell.objects.filter(pk__in=[c.pk for c in stale]).delete()
    transaction.on_commit(lambda: [_delete_files(c) for c in stale])  # the files once the rows are gone
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
            localizer_version=localizer_version,
        )
        _set_model_answer(cell, result, classifier_version=classifier_version, crop=crops[k] if crops is not None else None,
                          written=written)
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


def _check_open(slide) -> None:
    if slide.signed_off_at is not None:
        raise ApplicationError("This slide is signed off; its cells can no longer change.", status_code=409)


def slide_hold_open(slide_id: int) -> Slide:
    """The slide, its row held until the transaction ends (``slides.services.slide_hold``), and not signed
    off: no cell changes once its slide is signed off, and two changes of one cell see each other."""
    slide = slide_hold(slide_id=slide_id)
    _check_open(slide)
    return slide


def _lock(cell: Cell) -> Cell:
    """``cell`` read again once its slide is held (:func:`slide_hold_open`): the history's ``before`` is then
    the cell as this change found it, also where another change came first."""
    slide = slide_hold_open(cell.slide_id)
    try:
        cell.refresh_from_db()
    except Cell.DoesNotExist:
        raise ApplicationError("This cell has just been deleted.", status_code=404) from None
    cell.slide = slide
    return cell


@transaction.atomic
def cell_reclassify(*, cell: Cell, label: str, user: User) -> Cell:
    _lock(cell)
    before = cell_snapshot(cell)
    cell.reviewed_class = _check_class(cell, label)
    cell.reviewed_by = user
    cell.reviewed_at = timezone.now()
    cell.full_clean(exclude=["heatmap", "crop"])
    cell.save(update_fields=["reviewed_class", "reviewed_by", "reviewed_at", "updated_at"])
    _event(cell=cell, action=CellEvent.Action.RECLASSIFY, actor=user, before=before, after=cell_snapshot(cell))
    return cell


@transaction.atomic
def cell_mark(*, cell: Cell, difficult: bool, user: User) -> Cell:
    """Mark a cell difficult (hard to make out: box files say so, localization scores leave it out),
    or take the mark off; a change is kept in the cell's history, a mark set again is no change."""
    _lock(cell)
    if cell.difficult == difficult:
        return cell
    before = cell_snapshot(cell)
    cell.difficult = difficult
    cell.save(update_fields=["difficult", "updated_at"])
    _event(cell=cell, action=CellEvent.Action.MARK, actor=user, before=before, after=cell_snapshot(cell))
    return cell


@transaction.atomic
def cell_update(*, cell: Cell, user: User, box: list[float] | None = None, reviewed_class: str | None = None,
                difficult: bool | None = None) -> Cell:
    """Move a cell's box, reclassify it and/or mark it, all or nothing: a class that is refused leaves the
    box where it was. Each change is an event of the cell's history."""
    if box is not None:
        cell = cell_move(cell=cell, box=box, user=user)
    if reviewed_class is not None:
        cell = cell_reclassify(cell=cell, label=reviewed_class, user=user)
    if difficult is not None:
        cell = cell_mark(cell=cell, difficult=difficult, user=user)
    return cell


def _check_box(image, box: list[float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
        raise ApplicationError(
            f"The box {box} is not inside the {image.width}x{image.height} image or is empty.", extra={"box": box}
        )
    return x0, y0, x1, y1


@transaction.atomic
def cell_move(*, cell: Cell, box: list[float], user: User, answer: bool = True) -> Cell:
    """Move or resize a cell's box; the model's answer and heatmap for the new box follow in a job
    (:func:`cell_answer_request`; ``answer=False``: the caller queues it)."""
    _lock(cell)
    before = cell_snapshot(cell)
    cell.x0, cell.y0, cell.x1, cell.y1 = _check_box(cell.image, box)
    if cell.crop:  # it showed the box as it was
        cell.crop.delete(save=False)
    cell.save(update_fields=["x0", "y0", "x1", "y1", "crop", "updated_at"])
    _event(cell=cell, action=CellEvent.Action.MOVE, actor=user, before=before, after=cell_snapshot(cell))
    if answer:
        cell_answer_request(cells=[cell], user=user)
    return cell


@transaction.atomic
def cell_create(*, image, box: list[float], label: str, user: User, answer: bool = True,
                difficult: bool = False) -> Cell:
    """A box drawn by a person, with the class they give (if any) and marked ``difficult`` where they
    could not make the cell out for sure; the model's answer and heatmap follow in a job
    (:func:`cell_answer_request`; ``answer=False``: the caller queues it)."""
    slide_hold_open(image.slide_id)
    x0, y0, x1, y1 = _check_box(image, box)
    cell = Cell(slide_id=image.slide_id, image=image, x0=x0, y0=y0, x1=x1, y1=y1, source=Cell.Source.PERSON,
                reviewed_class=label.strip(), reviewed_by=user if label else None,
                reviewed_at=timezone.now() if label else None, created_by=user, difficult=difficult)
    cell.save()
    _event(cell=cell, action=CellEvent.Action.CREATE, actor=user, before=None, after=cell_snapshot(cell))
    if answer:
        cell_answer_request(cells=[cell], user=user)
    return cell


def _kept_on_delete(cell: Cell) -> dict:
    """What a deletion keeps of the cell besides its snapshot (under ``before["kept"]``), to bring it back as
    it was (:func:`cell_restore`)."""
    return {
        "image": cell.image_id,
        "probabilities": cell.probabilities,
        "confidence": cell.confidence,
        "localizer_score": cell.localizer_score,
        "model_version": cell.model_version_id,
        "localizer_version": cell.localizer_version_id,
        "reviewed_by": cell.reviewed_by_id,
        "reviewed_at": cell.reviewed_at.isoformat() if cell.reviewed_at else None,
        "created_by": cell.created_by_id,
        "created_at": cell.created_at.isoformat() if cell.created_at else None,
    }


@transaction.atomic
def cell_delete(*, cell: Cell, user: User) -> None:
    _lock(cell)
    before = {**cell_snapshot(cell), "kept": _kept_on_delete(cell)}
    _event(cell=cell, action=CellEvent.Action.DELETE, actor=user, before=before, after=None)
    cell.delete()
    transaction.on_commit(lambda: _delete_files(cell))  # the files once the row is gone: a rollback keeps both


@transaction.atomic
def cell_restore(*, slide: Slide, cell_id: int, user: User) -> Cell:
    """Bring back a box deleted from the slide (undo), as it was when it was deleted: under its old id, its
    image, box, source, the model's answer, the class a person gave (by whom and when) and its mark. Its
    crop and heatmap went with it: the model's answer and heatmap for the box follow in a job
    (:func:`cell_answer_request`). The history keeps the restore after the deletion."""
    from django.utils.dateparse import parse_datetime

    from webapp.registry.models import ModelVersion

    slide = slide_hold_open(slide.pk)
    last = CellEvent.objects.filter(slide=slide, cell_ref=cell_id).order_by("-at", "-id").first()
    if last is None:
        raise ApplicationError(f"Slide {slide.pk} has no cell {cell_id}, deleted or not.", status_code=404)
    if last.action != CellEvent.Action.DELETE:
        if Cell.objects.filter(pk=cell_id, slide=slide).exists():
            raise ApplicationError(f"Cell {cell_id} is not deleted: there is nothing to bring back.", status_code=409)
        raise ApplicationError(f"Cell {cell_id} went when the slide was analysed again, not by a deletion: there is "
                               "nothing to bring back.", status_code=409)
    before = last.before or {}
    kept = before.get("kept") or {}
    images = list(slide.images.all())
    image = next((im for im in images if im.pk == kept.get("image")), None)
    if image is None and "image" not in kept and len(images) == 1:  # deleted before the image was kept
        image = images[0]
    if image is None:
        raise ApplicationError(f"Cell {cell_id} was deleted before its image was kept with it: draw the box again.",
                               status_code=409)
    if Cell.objects.filter(pk=cell_id).exists():  # SQLite gives a deleted last id to the next cell
        raise ApplicationError(f"Cell {cell_id}'s id has been given to a box drawn since: draw it again.",
                               status_code=409)
    x0, y0, x1, y1 = _check_box(image, before["box"])

    def existing(model, pk):
        return pk if pk is not None and model.objects.filter(pk=pk).exists() else None

    def when(text):
        return parse_datetime(text) if text else None

    source = before.get("source") if before.get("source") in Cell.Source.values else Cell.Source.PERSON
    reviewed_class = before.get("reviewed_class") or ""
    cell = Cell(
        pk=cell_id, slide=slide, image=image, x0=x0, y0=y0, x1=x1, y1=y1, source=source,
        localizer_score=kept.get("localizer_score"), predicted_class=before.get("predicted_class") or "",
        probabilities=kept.get("probabilities") or {}, confidence=kept.get("confidence"),
        model_version_id=existing(ModelVersion, kept.get("model_version")),
        localizer_version_id=existing(ModelVersion, kept.get("localizer_version")),
        reviewed_class=reviewed_class,
        reviewed_by_id=existing(User, kept.get("reviewed_by")) if reviewed_class else None,
        reviewed_at=when(kept.get("reviewed_at")) if reviewed_class else None,
        difficult=bool(before.get("difficult")), created_by_id=existing(User, kept.get("created_by")),
    )
    cell.save(force_insert=True)
    if kept.get("created_at"):
        cell.created_at = when(kept["created_at"])
        Cell.objects.filter(pk=cell.pk).update(created_at=cell.created_at)
    _event(cell=cell, action=CellEvent.Action.RESTORE, actor=user, before=None, after=cell_snapshot(cell))
    cell_answer_request(cells=[cell], user=user)
    return cell


ANSWER_JOB = "cell_classify"


def cell_answer_key(*, cells: list[Cell]) -> str:
    """One job per cell and box (a box moved again gets a job of its own), or per set of them."""
    if len(cells) == 1:
        return f"classify:cell:{cells[0].pk}:" + ",".join(repr(float(v)) for v in cells[0].box)
    entries = json.dumps([[c.pk, c.box] for c in cells])
    return f"classify:cells:{cells[0].slide_id}:{hashlib.sha1(entries.encode()).hexdigest()}"


def cell_answer_request(*, cells: list[Cell], user: User | None) -> Job | None:
    """Queue the active classifier's answers and heatmaps for cells' boxes as they are now, one job
    for the lot (cells of one slide; None when there are none or no classifier is active)."""
    from webapp.jobs.services import job_enqueue
    from webapp.registry.models import ModelVersion
    from webapp.registry.selectors import model_version_active

    if not cells or model_version_active(kind=ModelVersion.Kind.CLASSIFIER) is None:
        return None
    slide = cells[0].slide
    return job_enqueue(
        kind=ANSWER_JOB,
        key=cell_answer_key(cells=cells),
        params={"slide_id": slide.pk, "cells": [{"id": c.pk, "box": c.box} for c in cells]},
        lab=slide.patient.lab,
        created_by=user,
    )


def cell_classify(*, slide_id: int, cells: list[dict], job_id: int | None = None, progress=None) -> None:
    """The active classifier's answers and heatmaps for cells' boxes (drawn or moved by a person;
    ``cells``: ``{"id", "box"}`` each), the classifier prepared on the slide's cells as the slide's
    analysis prepares it: its normalization statistics moved towards those of the slide's cells
    (``LEUKOLAB_CLASS_NORM``: those the analysis kept, where it ran with this classifier; else taken
    from the slide's cells as they are now) and, with ``LEUKOLAB_CLASS_ADAPT``, the probabilities
    re-weighted to the slide's class frequencies. A class given by a person stays; nothing is written
    for a cell whose box has changed, or that has gone, since the job was queued (the change queued a
    job of its own)."""
    from collections import defaultdict

    from ml.analyze import adapt_to_sample, analyze_image, classifier_for_sample
    from ml.boxes import Box

    from webapp.registry.runtime import active_classifier
    from webapp.slides.services import slide_image_is_reduced, slide_image_read, slide_statistics_load

    report = progress or (lambda f, m="": None)
    wanted = {int(e["id"]): [float(v) for v in e["box"]] for e in cells}
    targets = {c.pk: c for c in Cell.objects.filter(pk__in=wanted, slide_id=slide_id).select_related("image")
               if c.box == wanted[c.pk]}
    if not targets:
        report(1.0, "the cells have changed or gone since")
        return
    report(0.0, "loading the classifier")
    classifier_mv, classifier = active_classifier()
    if classifier is None:
        report(1.0, "no classifier is active")
        return
    norm, adapt = settings.LEUKOLAB_CLASS_NORM, settings.LEUKOLAB_CLASS_ADAPT
    if norm is not None:
        kept_statistics = slide_statistics_load(slide=Slide.objects.get(pk=slide_id), model_version=classifier_mv)
        if kept_statistics is not None:
            try:
                classifier, norm = classifier.with_normalization_state(kept_statistics), None
            except ValueError:  # kept for another network: taken again below
                pass
    others: dict[int, list[Box]] = defaultdict(list)  # the slide's other cells, per image
    for c in Cell.objects.filter(slide_id=slide_id).exclude(pk__in=targets).order_by("pk"):
        others[c.image_id].append(Box(*c.box))
    mine: dict[int, list[Cell]] = defaultdict(list)  # the cells to answer for, per image
    for c in sorted(targets.values(), key=lambda c: c.pk):
        mine[c.image_id].append(c)
    images = [im for im in SlideImage.objects.filter(slide_id=slide_id).order_by("position", "pk")
              if im.pk in others or im.pk in mine]
    reads = (len(images) if norm is not None else 0) + (len(images) if adapt is not None else len(mine))
    done = [0]

    def reading(image) -> np.ndarray:
        report(0.9 * done[0] / reads, f"reading image {images.index(image) + 1} of {len(images)}")
        done[0] += 1
        return slide_image_read(image=image)

    def boxes_of(cells_: list[Cell]) -> list[Box]:
        return [Box(*c.box) for c in cells_]

    kept = {}  # the images of the cells answered for, read once where that is all there is to read
    if norm is not None:
        crops = []
        for image in images:
            array = reading(image)
            crops.append(classifier.crops(array, others[image.pk] + boxes_of(mine[image.pk])))
            if image.pk in mine and len(mine) == 1:
                kept[image.pk] = array
            del array
        classifier = classifier_for_sample(classifier, crops, norm)
        del crops
    answers: list[tuple[Cell, object, np.ndarray | None]] = []
    rest = []
    for image in images:
        if image.pk not in mine and adapt is None:
            continue
        array = kept.pop(image.pk, None)
        if array is None:
            array = reading(image)
        if adapt is not None and others[image.pk]:
            rest.append(analyze_image(array, localizer=None, classifier=classifier, boxes=others[image.pk]))
        if image.pk in mine:
            results = analyze_image(array, localizer=None, classifier=classifier, boxes=boxes_of(mine[image.pk]),
                                    heatmaps=settings.LEUKOLAB_HEATMAPS)
            rest.append(results)
            crops = cell_crops_of(array, results) if slide_image_is_reduced(image=image) else [None] * len(results)
            answers += list(zip(mine[image.pk], results, crops))
        del array
    if adapt is not None:
        adapt_to_sample(rest, classifier, adapt)
    report(0.95, "storing the answers")
    written = 0
    for target, result, crop in answers:
        with undone_on_failure() as new_files, transaction.atomic():
            cell = Cell.objects.select_for_update().filter(pk=target.pk).first()
            if cell is None or cell.box != wanted[cell.pk]:
                continue
            before = cell_snapshot(cell)
            old_files = _files_of(cell)
            transaction.on_commit(lambda old_files=old_files: _remove(old_files))  # a failure keeps the old answer's
            cell.heatmap = cell.crop = None
            _set_model_answer(cell, result, classifier_version=classifier_mv, crop=crop, written=new_files)
            cell.save()
            _event(cell=cell, action=CellEvent.Action.ANSWER, actor=None, before=before, after=cell_snapshot(cell))
            written += 1
    report(1.0, f"answered for {written} cell{'s' if written != 1 else ''}")
