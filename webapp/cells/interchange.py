"""Training sets out of the app, and boxes into it.

Boxes go out as Pascal VOC XML, COCO JSON or YOLO txt and come in from the same formats, through the
readers and writers of ``ml.localization.formats`` (``python -m ml.localization`` reads an exported
folder as it is). Cells with a class go out as a class-per-folder set of crops with the box of each
(``ml.classification.data.export_crop``, ``boxes.csv``), which ``python -m ml.classification train
--data`` reads as it is.
"""
from __future__ import annotations

import io
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZIP_STORED

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from zipstream import ZipStream

from webapp.cells.models import Cell
from webapp.common.exceptions import ApplicationError
from webapp.slides.models import Slide, SlideImage

BOX_FORMATS = ("voc", "coco", "yolo")
WBC = "WBC"  # the label of a white cell's box where the class is not exported (what BCCD's files say)
SKIPPED_LABELS = {"rbc", "platelets"}  # other objects of a smear's box files (BCCD): not white cells
WHICH = ("confirmed", "all")


def _image_name(image: SlideImage) -> str:
    """Unique in an export of many slides, and the uploaded name still in it (a box file coming back
    to another installation finds its image by that)."""
    return f"slide{image.slide_id}_image{image.pk}_{Path(image.filename).stem}.{image.format_ext}"


_EXPORTED_NAME = re.compile(r"^slide(\d+)_image(\d+)_(.+)$")  # slide id, image id, uploaded name's stem


IMAGE_CHUNK = 1 << 20


def _image_bytes(image: SlideImage) -> Iterator[bytes]:
    """The stored image file's bytes, a chunk at a time (read when the zip reaches it)."""
    with image.file.open("rb") as src:
        yield from iter(lambda: src.read(IMAGE_CHUNK), b"")


def _stored_sizes(images: Iterable[SlideImage]) -> dict[int, int]:
    """Each image's stored file size, by id; an image whose file is gone from storage is an
    ApplicationError naming it (asked before a zip's first byte: a zip cut short would pass for a whole one)."""
    sizes, missing = {}, []
    for image in images:
        try:
            sizes[image.pk] = image.file.size
        except OSError:  # FileNotFoundError, on the file system and S3 alike
            missing.append(f"{image.filename} (slide {image.slide_id})")
    if missing:
        raise ApplicationError(f"The stored file of {len(missing)} image{'s' if len(missing) > 1 else ''} is missing, "
                               f"so the export cannot be made: {', '.join(missing[:5])}"
                               f"{' and more' if len(missing) > 5 else ''}.", status_code=409)
    return sizes


def _zip_stream(*, sized: bool) -> ZipStream:
    """A zip written as it is sent, its files stored as they are (crops and most images are compressed
    already); with ``sized`` (no file compressed on the way), every file's size is known before it is
    read, and so the zip's (a download shows how far it has come)."""
    return ZipStream(compress_type=ZIP_STORED, sized=sized)


def cells_for_export(*, slides: QuerySet[Slide], which: str) -> QuerySet[Cell]:
    """The slides' cells; ``confirmed``: those whose class a person gave or confirmed (a reviewed
    class, or a signed-off slide), ``all``: the model's answers too."""
    if which not in WHICH:
        raise ApplicationError(f"which must be one of {', '.join(WHICH)}, not {which!r}.")
    cells = Cell.objects.filter(slide__in=slides)
    if which == "confirmed":
        cells = cells.filter(Q(slide__signed_off_at__isnull=False) | ~Q(reviewed_class=""))
    return cells.select_related("image").order_by("image_id", "pk")


def _cells_by_image(slides: QuerySet[Slide]) -> dict[int, list[Cell]]:
    """Every cell of the slides, by its image's id."""
    by_image: dict[int, list[Cell]] = defaultdict(list)
    for cell in cells_for_export(slides=slides, which="all"):
        by_image[cell.image_id].append(cell)
    return by_image


def _images_of(slides: QuerySet[Slide]) -> QuerySet[SlideImage]:
    return SlideImage.objects.filter(slide__in=slides).select_related("slide").order_by("slide_id", "position", "pk")


def _annotation(image: SlideImage, cells: list[Cell], *, with_classes: bool = False):
    """The image's boxes as a box file holds them, under its export name: each labelled ``WBC`` or, with
    ``with_classes``, its cell's class; a cell marked difficult so."""
    from ml.boxes import Box
    from ml.localization.formats import Annotation

    boxes = [Box(*c.box, label=c.effective_class if with_classes else WBC, difficult=c.difficult) for c in cells]
    return Annotation(_image_name(image), image.width, image.height, boxes)


def boxes_export(*, slides: QuerySet[Slide], fmt: str, with_classes: bool = False, signed_off: bool = False):
    """A zip of the slides' images and their cells' boxes in ``fmt`` (voc, coco or yolo), labelled
    ``WBC`` or, with ``with_classes``, with each cell's class (reviewed over predicted). Slides not
    analyzed and without cells are left out (their images would teach that they hold no white cell);
    with ``signed_off``, every slide not signed off too. Every image of the slides kept goes in, also
    one without a cell (a field with none is a lesson too). A cell marked difficult is so in VOC's
    ``<difficult>`` (COCO and YOLO have no such flag). Returns the zip as a stream of known size:
    everything is checked and the box files written before its first byte; the images are read as
    it is sent."""
    from ml.localization.formats import write_coco, write_voc, write_yolo

    if fmt not in BOX_FORMATS:
        raise ApplicationError(f"format must be one of {', '.join(BOX_FORMATS)}, not {fmt!r}.")
    slides = slides.filter(Q(status=Slide.Status.ANALYZED) | Q(cells__isnull=False)).distinct()
    if signed_off:
        slides = slides.filter(signed_off_at__isnull=False)
    if not slides.exists():
        raise ApplicationError("No slide to export: none of these is analyzed" + (" and signed off." if signed_off else "."))
    by_image = _cells_by_image(slides)
    images = list(_images_of(slides))
    if with_classes and any(not c.effective_class or c.unidentified for cells in by_image.values() for c in cells):
        raise ApplicationError("Some of these cells have no class yet, or one the model is unsure of; export them "
                               "without classes, or give them one.")
    anns = [_annotation(image, by_image.get(image.pk, []), with_classes=with_classes) for image in images]
    labels = sorted({b.label for a in anns for b in a.boxes}) or [WBC]
    folder = {"voc": "JPEGImages", "coco": "images", "yolo": "images"}[fmt]
    # JPEG and PNG are compressed already and go in as they are, and the zip's size is then known before
    # it is sent; BMP and TIFF mostly are not, and are compressed on the way
    raw = [image.format not in ("JPEG", "PNG") for image in images]
    sizes = _stored_sizes(images)
    zs = _zip_stream(sized=not any(raw))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def written(write, name: str, *args, **kwargs) -> bytes:
            write(*args, tmp / name, **kwargs)
            return (tmp / name).read_bytes()

        for image, ann, deflate in zip(images, anns, raw):
            zs.add(_image_bytes(image), f"{folder}/{ann.image}", size=sizes[image.pk],
                   compress_type=ZIP_DEFLATED if deflate else ZIP_STORED)
            stem = Path(ann.image).stem
            if fmt == "voc":
                zs.add(written(write_voc, "a.xml", ann), f"Annotations/{stem}.xml")
            elif fmt == "yolo":
                zs.add(written(write_yolo, "a.txt", ann, labels=labels), f"labels/{stem}.txt")
        if fmt == "coco":
            zs.add(written(write_coco, "annotations.json", anns, labels=labels), "annotations.json")
        elif fmt == "yolo":
            zs.add("".join(f"{label}\n" for label in labels), "classes.txt")
    return zs


def boxes_write(*, slides: QuerySet[Slide], folder: Path, max_side: int | None = None) -> int:
    """The slides' images and their cells' boxes (``WBC``) as a Pascal VOC folder (``JPEGImages/``,
    ``Annotations/``) for a training run, as :func:`boxes_export` exports them; ``max_side``: images with a
    longer side are left out (a scan is no field to train a detector on whole). Returns how many images
    it holds."""
    from ml.localization.formats import write_voc

    by_image = _cells_by_image(slides)
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    n = 0
    for image in _images_of(slides):
        if max_side is not None and max(image.width, image.height) > max_side:
            continue
        ann = _annotation(image, by_image.get(image.pk, []))
        with image.file.open("rb") as src, open(folder / "JPEGImages" / ann.image, "wb") as dst:
            shutil.copyfileobj(src, dst)
        write_voc(ann, folder / "Annotations" / f"{Path(ann.image).stem}.xml")
        n += 1
    return n


class _Crops:
    """The cells' crop files of a class-per-folder set, made one at a time (as a zip reaches them): each
    image is decoded once, as cells come ordered by image; the box of each crop in its pixels is kept
    for ``boxes.csv``."""

    def __init__(self):
        self.boxes = {}
        self._image_id, self._array = None, None

    @staticmethod
    def name(cell: Cell) -> str:
        """``<class>/slide<S>_cell<C>.jpg``, or ``.png`` from a lossless image."""
        return f"{cell.effective_class}/slide{cell.slide_id}_cell{cell.pk}.{'jpg' if cell.image.format == 'JPEG' else 'png'}"

    def data(self, cell: Cell) -> bytes:
        from PIL import Image

        from ml.boxes import Box
        from ml.classification.data import export_crop
        from webapp.slides.services import slide_image_read

        if cell.image_id != self._image_id:
            self._image_id, self._array = cell.image_id, slide_image_read(image=cell.image)
        name = self.name(cell)
        crop, self.boxes[name] = export_crop(self._array, Box(*cell.box).clip(cell.image.width, cell.image.height))
        out = io.BytesIO()
        # a JPEG image's cells as JPEG (at 95, next to nothing lost again), a lossless one's as PNG
        if name.endswith(".jpg"):
            Image.fromarray(crop).save(out, format="JPEG", quality=95)
        else:
            Image.fromarray(crop).save(out, format="PNG", compress_level=1)
        return out.getvalue()

    def box_file(self) -> bytes:
        """``boxes.csv`` of the crops made so far."""
        from ml.classification.data import box_file_text

        return box_file_text(self.boxes).encode()


def _later(make: Callable[[], bytes]) -> Iterator[bytes]:
    yield make()


def _labelled(*, slides: QuerySet[Slide], which: str) -> list[Cell]:
    """The cells with a class to learn from: a class the model is unsure of (shown as unidentified) is none."""
    return [c for c in cells_for_export(slides=slides, which=which) if c.effective_class and not c.unidentified]


def crops_export(*, slides: QuerySet[Slide], which: str = "confirmed"):
    """A zip of the slides' cells that have a class, as a class-per-folder set of crops
    (``<class>/slide<S>_cell<C>.jpg``, or ``.png`` from a lossless image) with ``boxes.csv``, the box of each in its crop's pixels.
    Returns the zip as a stream: the cells are chosen and checked before its first byte; each crop is
    cut as it is sent."""
    from ml.classification.data import BOX_FILE

    cells = _labelled(slides=slides, which=which)
    if not cells:
        hint = " (pass which=all to export the model's answers too)" if which == "confirmed" else ""
        raise ApplicationError(f"These slides have no cell with a class to export{hint}.")
    _stored_sizes({c.image_id: c.image for c in cells}.values())
    crops = _Crops()
    zs = _zip_stream(sized=False)
    for cell in cells:
        zs.add(_later(lambda cell=cell: crops.data(cell)), crops.name(cell))
    zs.add(_later(crops.box_file), BOX_FILE)
    return zs


def crops_write(*, slides: QuerySet[Slide], folder: Path, which: str = "confirmed") -> int:
    """The same set as :func:`crops_export`, written into ``folder`` (for a training run); returns how many
    cells it holds (0: none, and nothing written)."""
    from ml.classification.data import BOX_FILE

    cells = _labelled(slides=slides, which=which)
    if cells:
        crops = _Crops()
        for cell in cells:
            path = Path(folder) / crops.name(cell)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(crops.data(cell))
        (Path(folder) / BOX_FILE).write_bytes(crops.box_file())
    return len(cells)


def _known_classes() -> set[str]:
    from ml.classification.data import PBC_CLASSES
    from webapp.registry.runtime import active_classifier

    _, classifier = active_classifier()
    return set(classifier.classes) if classifier is not None else set(PBC_CLASSES)


def _read_upload(upload, *, fmt: str, image: SlideImage, labels: list[str] | None):
    """The annotations of one uploaded box file; problems are ApplicationErrors naming the file."""
    from ml.localization.formats import AnnotationError, read_coco, read_voc, read_yolo

    name = Path(upload.name or "annotations").name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{Path(name).suffix.lower()[:8]}"  # the uploader's name only in messages
        with open(path, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        try:
            if fmt == "voc":
                return [read_voc(path)]
            if fmt == "coco":
                return read_coco(path)
            if not labels:
                raise ApplicationError(f"{name}: a YOLO file needs the class names, in order (labels=WBC,RBC,...).")
            return [read_yolo(path, width=image.width, height=image.height, labels=labels, image=image.filename)]
        except AnnotationError as exc:
            raise ApplicationError(str(exc).replace(str(path), name)) from None


def _format_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    fmt = {".xml": "voc", ".json": "coco", ".txt": "yolo"}.get(suffix)
    if fmt is None:
        raise ApplicationError(f"{name}: not a box file (expected Pascal VOC .xml, COCO .json or YOLO .txt).")
    return fmt


def _image_named(ann_image: str, images: list[SlideImage], where: str) -> SlideImage | None:
    """The slide's image a box file names, or None: by its uploaded name (as written, or cleaned as
    an upload's name is), or by the name an export gave it. An export's name of another image of
    this installation is that image, and so this slide's only where this slide has the same file
    (the same field uploaded twice); an export's name from elsewhere is matched by the uploaded
    name it carries. A name that fits several of the slide's images is refused."""
    from ml.localization.formats import image_name

    from webapp.slides.validation import clean_filename

    name = image_name(ann_image or "")
    if not name:
        return None
    cleaned = clean_filename(name)
    found = [im for im in images if name == _image_name(im) or im.filename in (name, cleaned)]
    if not found:
        stem = Path(name).stem
        exported = _EXPORTED_NAME.match(stem)
        source = None
        if exported:
            source = SlideImage.objects.filter(pk=int(exported.group(2)), slide_id=int(exported.group(1))).first()
            if source is not None and Path(source.filename).stem != exported.group(3):
                source = None  # not this installation's image of that number
            stem = exported.group(3)
        if source is not None:
            found = [im for im in images if im.sha256 == source.sha256]
        else:
            stems = {stem, Path(cleaned).stem}
            found = [im for im in images if Path(im.filename).stem in stems]
    if len(found) > 1:
        raise ApplicationError(f"{where}: its image {name!r} could be any of {len(found)} images of this slide "
                               f"({', '.join(im.filename for im in found)}); import it into a slide where the name "
                               f"is unique.")
    return found[0] if found else None


def _match_image(ann_image: str, images: list[SlideImage], where: str) -> SlideImage:
    """The slide's image a file of one image's boxes is for, by the name it gives (a box file for
    another field must not land on this one, even where the slide has one image)."""
    image = _image_named(ann_image, images, where)
    if image is None:
        raise ApplicationError(
            f"{where}: its image {ann_image!r} is none of this slide's ({', '.join(im.filename for im in images)}).")
    return image


MAX_BOX_FILE_BYTES = 64 * 1024 * 1024


def boxes_import(*, slide: Slide, files: Iterable, user: User, labels: list[str] | None = None) -> dict:
    """Add the white cells of box files (VOC .xml, COCO .json, YOLO .txt with ``labels``) to a slide as
    cells drawn by ``user``: a box labelled ``WBC`` without a class, one labelled with a known class
    with that class as reviewed; ``RBC`` and ``Platelets`` boxes are skipped. Each file is matched to
    the slide's image by name (see ``_image_named``); its image size must be that image's. A box the
    slide already has (within a pixel) is not added twice; boxes of no area are counted as empty. VOC's
    ``<difficult>`` flag marks the cell difficult.
    Everything is checked before anything is stored: a bad file adds nothing."""
    from webapp.cells.services import cell_answer_request, cell_create, slide_hold_open

    images = list(slide.images.order_by("position", "pk"))
    known = _known_classes()
    known_lower = {k.lower(): k for k in known}
    plan, skipped = [], Counter()
    files = list(files)
    if not files:
        raise ApplicationError("Attach at least one box file in the 'files' field.")
    for upload in files:
        name = Path(upload.name or "annotations").name
        fmt = _format_of(name)
        target = _match_image(Path(name).stem, images, name) if fmt == "yolo" else None
        if upload.size is not None and upload.size > MAX_BOX_FILE_BYTES:
            raise ApplicationError(f"{name}: over the limit of {MAX_BOX_FILE_BYTES // 2**20} MB for a box file.")
        anns = _read_upload(upload, fmt=fmt, image=target or images[0], labels=labels)
        if len(anns) > 1:  # a COCO file of many images: the boxes of this slide's images, by name
            named = [(ann, _image_named(ann.image, images, name)) for ann in anns]
            for ann, image in named:
                if image is None:
                    skipped["of other images"] += len(ann.boxes)
            named = [(ann, image) for ann, image in named if image is not None]
            if not named:
                raise ApplicationError(f"{name}: none of its {len(anns)} images is one of this slide's "
                                       f"({', '.join(im.filename for im in images)}).")
        else:
            # a VOC file without <filename> is named like its image
            named = [(ann, target or _match_image(ann.image or Path(name).stem, images, name)) for ann in anns]
        for ann, image in named:
            if (ann.width, ann.height) != (image.width, image.height):
                raise ApplicationError(
                    f"{name}: its boxes are for a {ann.width}x{ann.height} image; {image.filename} is "
                    f"{image.width}x{image.height}.")
            if ann.empty:
                skipped["empty"] += ann.empty
            for box in ann.boxes:
                label = box.label.strip()
                if label.lower() in SKIPPED_LABELS:
                    skipped[label] += 1
                    continue
                if label.lower() != WBC.lower() and label.lower() not in known_lower:
                    raise ApplicationError(
                        f"{name}: unknown label {label!r} (expected WBC, RBC, Platelets or a cell class: "
                        f"{', '.join(sorted(known))}).")
                cls = "" if label.lower() == WBC.lower() else known_lower[label.lower()]
                coords = [round(v, 2) for v in box.as_list()]
                if coords[2] <= coords[0] or coords[3] <= coords[1]:  # thinner than the app keeps
                    skipped["empty"] += 1
                    continue
                plan.append((image, coords, cls, box.difficult))
    added = []
    with transaction.atomic():
        slide_hold_open(slide.pk)  # held until the boxes are in: a sign-off waits, or comes first and refuses them
        existing = defaultdict(list)  # per image, the boxes there
        for c in slide.cells.all():
            existing[c.image_id].append(c.box)
        for image, box, cls, difficult in plan:
            # the same box within a pixel (VOC and other tools write whole pixels)
            if any(max(abs(a - b) for a, b in zip(box, other)) <= 1.0 for other in existing[image.pk]):
                skipped["already there"] += 1
                continue
            existing[image.pk].append(box)
            added.append(cell_create(image=image, box=box, label=cls, user=user, answer=False, difficult=difficult))
        cell_answer_request(cells=added, user=user)  # one job answers for them all
    return {"added": len(added), "skipped": dict(skipped)}
