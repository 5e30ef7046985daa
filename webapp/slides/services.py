from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from webapp.common.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import PermanentJobError, job_enqueue
from webapp.patients.models import Deletion, Patient
from webapp.slides.models import Slide, SlideImage
from webapp.slides.selectors import slide_analyze_key
from webapp.slides.validation import image_upload_check

logger = logging.getLogger("leukolab.slides")


def slide_upload(
    *,
    user: User,
    patient: Patient,
    files: Sequence[UploadedFile],
    stain: str = "",
    microns_per_pixel: float | None = None,
    max_files: int = 50,
) -> tuple[Slide, Job]:
    """Create a slide from one or more smear images and queue its analysis.

    Every file is checked before anything is stored; a bad file leaves no slide, no row and no file behind.
    """
    if not files:
        raise ApplicationError("Attach at least one image in the 'images' field.")
    if len(files) > max_files:
        raise ApplicationError(f"At most {max_files} images per upload; got {len(files)}.")
    checked = [image_upload_check(f) for f in files]
    stored: list[SlideImage] = []
    try:
        with transaction.atomic():
            slide = Slide(patient=patient, stain=stain.strip(), microns_per_pixel=microns_per_pixel, uploaded_by=user)
            slide.full_clean()
            slide.save()
            for position, item in enumerate(checked):
                image = SlideImage(
                    slide=slide, filename=item.filename, format=item.format, width=item.width,
                    height=item.height, size_bytes=item.size_bytes, sha256=item.sha256, position=position,
                )
                image.file.save(item.filename, item.upload, save=False)
                stored.append(image)
                image.save()
            # the patient's row, held to the commit, as its deletion holds it while it counts the slides
            # (patients.services.patient_delete): a patient deleted meanwhile is given no slide
            if not Patient.objects.select_for_update().filter(pk=patient.pk).values_list("pk", flat=True):
                raise ApplicationError(f"Patient {patient.identifier} has just been deleted; the upload was not "
                                       "kept.", status_code=404)
            job = slide_analyze_request(slide=slide, user=user)
    except Exception:
        for image in stored:  # the rows rolled back; remove the files written before the failure
            image.file.delete(save=False)
        raise
    return slide, job


def slide_hold(*, slide_id: int) -> Slide:
    """The slide, its row held until the transaction ends. Every change to a slide's cells, the request of
    its analysis, the storing of its answers and its sign-off take the row first, so they happen one after
    the other. A slide deleted meanwhile is a 404."""
    slide = Slide.objects.select_for_update().filter(pk=slide_id).first()
    if slide is None:
        raise ApplicationError("This slide has just been deleted.", status_code=404)
    return slide


@transaction.atomic
def slide_analyze_request(*, slide: Slide, user: User | None) -> Job:
    """Queue the analysis of a slide (idempotent: a queued or running analysis is returned). The slide's
    row is held (:func:`slide_hold`): a sign-off that came first refuses the analysis, one that comes
    after finds the slide queued and refuses itself."""
    if slide_hold(slide_id=slide.pk).signed_off_at is not None:
        raise ApplicationError("This slide is signed off; its analysis can no longer change.", status_code=409)
    job = job_enqueue(
        kind="slide_analyze",
        key=slide_analyze_key(slide.pk),
        params={"slide_id": slide.pk},
        lab=slide.patient.lab,
        created_by=user,
    )
    if job.status == Job.Status.QUEUED:
        Slide.objects.filter(pk=slide.pk).update(status=Slide.Status.QUEUED, error="")
    return job


def slide_analyze(*, slide_id: int, job_id: int | None = None, progress: Callable[[float, str], None] | None = None) -> None:
    """Find and classify the white cells of every image of the slide with the active model versions.

    The slide is one sample. With ``LEUKOLAB_CLASS_NORM`` set, the cells of all its images are found
    first and the classifier's normalization statistics are moved towards theirs
    (``ml.analyze.classifier_for_sample``) before it classifies them. With ``LEUKOLAB_CLASS_ADAPT``
    set, the cells' probabilities are re-weighted towards the slide's own class frequencies
    (``ml.analyze.adapt_to_sample``), so every image is classified before any cell is stored;
    otherwise each image's cells are stored as it is done (memory holds one image at a time)."""
    from ml.analyze import adapt_to_sample, analyze_image, classifier_for_sample
    from ml.localization.scale import rescale_for_microns_per_pixel

    from webapp.cells.services import cell_crops_of, cells_replace_from_model
    from webapp.registry.runtime import active_classifier, active_localizer

    slide = Slide.objects.filter(pk=slide_id).first()
    if slide is None:
        raise PermanentJobError(f"slide {slide_id} no longer exists")
    report = progress or (lambda f, m="": None)
    if slide.signed_off_at is not None:  # a signed-off report stays as it was signed
        report(1.0, "the slide is signed off: not analysed again")
        return
    Slide.objects.filter(pk=slide_id).update(status=Slide.Status.ANALYZING, error="")
    report(0.0, "loading models")
    localizer_mv, localizer = active_localizer()
    classifier_mv, classifier = active_classifier()
    images = list(slide.images.all())
    n = len(images)
    # The slide's pixel size when known; otherwise the localizer finds the magnification itself.
    rescale = rescale_for_microns_per_pixel(slide.microns_per_pixel)
    adapt = classifier is not None and settings.LEUKOLAB_CLASS_ADAPT is not None
    norm = settings.LEUKOLAB_CLASS_NORM if classifier is not None else None

    found: dict[int, list] = {}
    start = 0.0
    if norm is not None:
        # Finding the cells is most of the work: 70 % of the progress bar.
        crops = []
        for i, image in enumerate(images):
            label = f"image {i + 1} of {n}"
            report(0.7 * i / n, f"{label}: reading")
            array = slide_image_read(image=image)
            found[i] = localizer.detect(
                array, rescale=rescale,
                progress=lambda f, _i=i, _label=label: report(0.7 * (_i + 0.95 * f) / n, f"{_label}: finding cells"),
            )
            crops.append(classifier.crops(array, found[i]))
            if slide_image_is_reduced(image=image):
                report(0.7 * (i + 0.95) / n, f"{label}: making its preview and zoom tiles")
            _display_files_ensure(image=image, array=array)
            del array
        report(0.7, "normalizing the classifier on the slide's cells")
        classifier = classifier_for_sample(classifier, crops, norm)
        slide_statistics_save(slide=slide, model_version=classifier_mv, classifier=classifier)
        del crops
        start = 0.7
    share = 0.97 - start
    results_of = []
    for i, image in enumerate(images):
        label = f"image {i + 1} of {n}"
        report(start + share * i / n, f"{label}: reading")
        array = slide_image_read(image=image)

        step = "classifying cells" if i in found else "finding and classifying cells"  # found in the first pass

        def on_progress(fraction: float, _i=i, _label=label, _step=step) -> None:
            report(start + share * (_i + 0.95 * fraction) / n, f"{_label}: {_step}")

        results = analyze_image(
            array,
            localizer=localizer,
            classifier=classifier,
            heatmaps=bool(classifier is not None and settings.LEUKOLAB_HEATMAPS),
            progress=on_progress,
            rescale=rescale,
            boxes=found.get(i),
        )
        if i not in found:
            _display_files_ensure(image=image, array=array)
        # where the browser gets a reduced preview (a scan), each cell is kept at full resolution too
        crops = cell_crops_of(array, results) if slide_image_is_reduced(image=image) else None
        del array
        if adapt:
            results_of.append((image, results, crops))
        else:
            cells_replace_from_model(
                image=image, results=results, classifier_version=classifier_mv, localizer_version=localizer_mv,
                crops=crops,
            )
    if adapt:
        report(0.97, "estimating the slide's class frequencies")
        adapt_to_sample([results for _, results, _ in results_of], classifier, settings.LEUKOLAB_CLASS_ADAPT)
        for image, results, crops in results_of:
            cells_replace_from_model(
                image=image, results=results, classifier_version=classifier_mv, localizer_version=localizer_mv,
                crops=crops,
            )
    Slide.objects.filter(pk=slide_id).update(status=Slide.Status.ANALYZED, analyzed_at=timezone.now(), error="")
    report(1.0, "analyzed")


def slide_statistics_path(*, slide: Slide, model_version) -> str:
    return f"{slide.files_folder}/classifier-{model_version.pk}-statistics.npz"


def slide_statistics_save(*, slide: Slide, model_version, classifier) -> None:
    """Keep the normalization statistics the slide's cells gave the classifier in its analysis
    (``LEUKOLAB_CLASS_NORM``), for the answers to boxes drawn on the slide later: the same
    classifier, without reading the slide again."""
    buf = io.BytesIO()
    np.savez(buf, **classifier.normalization_state())
    path = slide_statistics_path(slide=slide, model_version=model_version)
    if default_storage.exists(path):
        default_storage.delete(path)
    default_storage.save(path, ContentFile(buf.getvalue()))


def slide_statistics_load(*, slide: Slide, model_version) -> dict | None:
    """The statistics :func:`slide_statistics_save` kept for this slide and classifier version, if any."""
    path = slide_statistics_path(slide=slide, model_version=model_version)
    if not default_storage.exists(path):
        return None
    with default_storage.open(path, "rb") as fh, np.load(io.BytesIO(fh.read()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def slide_image_read(*, image: SlideImage) -> np.ndarray:
    """The image's pixels (RGB, upright), for a job; a stored file that has gone fails the job for good."""
    from ml.imageio import load_image

    try:
        with image.file.open("rb") as fh:
            return load_image(fh)
    except FileNotFoundError as exc:
        raise PermanentJobError(f"{image.filename}: the stored file is missing") from exc


def _display_files_ensure(*, image: SlideImage, array) -> None:
    """What a browser shows of the image besides the file itself: its preview and its zoom tiles."""
    slide_image_preview_ensure(image=image, array=array)
    slide_image_tiles_ensure(image=image, array=array)


def slide_image_is_reduced(*, image: SlideImage) -> bool:
    """Whether the browser is shown a reduced preview of the image (larger than PREVIEW_MAX_SIDE)."""
    return max(image.width, image.height) > settings.LEUKOLAB_PREVIEW_MAX_SIDE


TILE_SIZE = 512  # pixels of a tile's side, at its level


def slide_image_tile_path(*, image: SlideImage, level: int, col: int, row: int) -> str:
    return f"{image.slide.tiles_folder}/{image.pk}/{level}/{col}_{row}.jpg"


def slide_image_tiles_ensure(*, image: SlideImage, array) -> None:
    """Give a scan shown through a reduced preview JPEG tiles to zoom into: level 0 at full resolution,
    each next level at half the last one's, down to the first level the preview is as sharp as (the
    browser shows the preview below that). ``TILE_SIZE`` pixels a side, the last row and column cut
    at the image's edge."""
    if image.tile_levels or not slide_image_is_reduced(image=image):
        return
    import cv2

    preview_scale = settings.LEUKOLAB_PREVIEW_MAX_SIDE / max(image.width, image.height)
    level, plane = 0, array
    while 2.0 ** -level > preview_scale:
        height, width = plane.shape[:2]
        for row in range(0, height, TILE_SIZE):
            for col in range(0, width, TILE_SIZE):
                tile = np.ascontiguousarray(plane[row:row + TILE_SIZE, col:col + TILE_SIZE])
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
                if not ok:
                    raise RuntimeError(f"{image.filename}: its level {level} tile at ({col}, {row}) could not be encoded")
                path = slide_image_tile_path(image=image, level=level, col=col // TILE_SIZE, row=row // TILE_SIZE)
                if default_storage.exists(path):
                    default_storage.delete(path)
                default_storage.save(path, ContentFile(buf.tobytes()))
        level += 1
        plane = cv2.resize(plane, ((width + 1) // 2, (height + 1) // 2), interpolation=cv2.INTER_AREA)
    SlideImage.objects.filter(pk=image.pk).update(tile_levels=level)
    image.tile_levels = level


def slide_image_preview_ensure(*, image: SlideImage, array) -> None:
    """Give TIFF files and large scans a browser-friendly JPEG, at most PREVIEW_MAX_SIDE pixels wide.

    A scan is first reduced by area averaging to twice the preview's size, then resampled (Lanczos):
    no full-size copy of it is made (as an image, Pillow's copy of a 20000x20000 scan takes 1.6 GB)."""
    max_side = settings.LEUKOLAB_PREVIEW_MAX_SIDE
    if image.preview or (image.format != "TIFF" and not slide_image_is_reduced(image=image)):
        return
    height, width = array.shape[:2]
    reduce = max(width, height) / (2 * max_side)
    if reduce > 1:
        import cv2

        size = (max(1, round(width / reduce)), max(1, round(height / reduce)))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    preview = Image.fromarray(array)
    preview.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    preview.save(buf, format="JPEG", quality=90)
    image.preview.save(f"{image.pk}.jpg", ContentFile(buf.getvalue()), save=False)
    image.save(update_fields=["preview"])


def slide_mark_failed(*, slide_id: int | None, error: str) -> None:
    if slide_id is not None:
        Slide.objects.filter(pk=slide_id).update(status=Slide.Status.FAILED, error=error[:2000])


def _storage_tree_delete(prefix: str) -> None:
    """Delete every file under ``prefix`` in the default storage: a folder on disk, keys in a bucket."""
    import shutil

    try:
        shutil.rmtree(default_storage.path(prefix), ignore_errors=True)
        return
    except NotImplementedError:  # no local paths (S3): by listing
        pass
    folders, files = default_storage.listdir(prefix)
    for name in files:
        default_storage.delete(f"{prefix}/{name}")
    for name in folders:
        _storage_tree_delete(f"{prefix}/{name}")


def slide_delete(*, slide: Slide, user: User) -> None:
    """Delete a slide that is not signed off: its images, cells and their history, and every file kept for
    them (the uploaded images, previews, zoom tiles, cell crops, heatmaps, the classifier's statistics).

    A signed-off slide is a report and stays. A slide whose analysis, or a model answer for a cell drawn
    on it, is queued or running is refused until that ends (the work would write to what is gone). The
    rows go first, in a transaction that holds the slide's row; the files once it has committed, so a
    failure keeps both (a file that cannot be deleted then is logged, the slide is gone). What was deleted,
    by whom and when is kept (``patients.models.Deletion``)."""
    from webapp.cells.models import Cell
    from webapp.cells.selectors import cells_awaiting_answer

    with transaction.atomic():
        slide = Slide.objects.select_for_update().select_related("patient").get(pk=slide.pk)
        if slide.signed_off_at is not None:
            raise ApplicationError(
                "This slide is signed off: its report is kept, and it cannot be deleted.", status_code=409)
        if Job.objects.filter(key=slide_analyze_key(slide.pk), status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).exists():
            raise ApplicationError(
                "This slide's analysis is queued or running; delete the slide when it has ended.", status_code=409)
        waiting = len(cells_awaiting_answer(slide=slide))
        if waiting:
            raise ApplicationError(
                f"The model is still answering for {waiting} cell{'s' if waiting > 1 else ''} of this slide; "
                "delete it in a moment.", status_code=409)

        images = list(slide.images.all())
        files = [f.name for image in images for f in (image.file, image.preview) if f]
        cells = list(Cell.objects.filter(slide=slide).only("crop", "heatmap"))
        files += [f.name for cell in cells for f in (cell.crop, cell.heatmap) if f]
        trees = [slide.tiles_folder, slide.files_folder]
        described = (f"slide {slide.pk} of patient {slide.patient.identifier} "
                     f"({len(images)} image{'s' if len(images) != 1 else ''}: {', '.join(i.filename for i in images)})")

        def remove_files() -> None:
            for name in files:
                try:
                    default_storage.delete(name)
                except Exception:
                    logger.exception("%s: its file %s could not be deleted", described, name)
            for prefix in trees:
                try:
                    _storage_tree_delete(prefix)
                except Exception:
                    logger.exception("%s: its files under %s could not be deleted", described, prefix)

        Deletion.objects.create(
            lab_id=slide.patient.lab_id, kind=Deletion.Kind.SLIDE, ref=slide.pk, patient_identifier=slide.patient.identifier,
            deleted_by=user, details={
                "images": [i.filename for i in images], "cells": len(cells),
                "status": slide.status, "uploaded_at": slide.uploaded_at.isoformat(),
                "uploaded_by": slide.uploaded_by.get_username() if slide.uploaded_by_id else None})
        slide.delete()
        transaction.on_commit(remove_files)
    logger.info("%s deleted by %s", described, user.get_username())


@transaction.atomic
def slide_sign_off(*, slide: Slide, user: User) -> Slide:
    """Sign a slide off: its cells can no longer change. The slide's row is held while it is checked and
    signed (:func:`slide_hold`): a change to its cells that came first is in what is signed, one that
    comes after is refused."""
    slide_hold(slide_id=slide.pk)
    slide.refresh_from_db()
    if slide.status != Slide.Status.ANALYZED:
        raise ApplicationError(f"Only an analyzed slide can be signed off; this one is {slide.status}.", status_code=409)
    if slide.signed_off_at is not None:
        raise ApplicationError("This slide is already signed off.", status_code=409)
    from webapp.cells.selectors import cells_awaiting_answer

    waiting = len(cells_awaiting_answer(slide=slide))
    if waiting:
        raise ApplicationError(
            f"The model is still answering for {waiting} cell{'s' if waiting > 1 else ''} drawn or moved by hand; "
            "sign off in a moment.", status_code=409)
    slide.signed_off_by = user
    slide.signed_off_at = timezone.now()
    slide.save(update_fields=["signed_off_by", "signed_off_at"])
    return slide
