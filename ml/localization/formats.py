"""Box annotations in and out: Pascal VOC XML, COCO JSON and YOLO txt.

One in-memory form, :class:`Annotation` (an image reference, its size and a list of
:class:`ml.boxes.Box`), and readers/writers for the three formats. The webapp's import/export
calls the same functions. Every problem with a file raises :class:`AnnotationError` whose
message starts with the file name, so a user can find and fix it. VOC's ``<difficult>`` flag is kept
(``Box.difficult``; the metrics leave such boxes out, as the VOC protocol does); COCO and YOLO have
no such flag, so converting to them scores those cells like any other.
"""
from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from ml.boxes import Box

log = logging.getLogger(__name__)

DEFAULT_LABELS = ("WBC", "RBC", "Platelets")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_TOLERANCE = 1.0  # pixels a box may overhang the image edge (rounding in other tools); it is clipped


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file."""


_CANONICAL = {name.casefold(): name for name in DEFAULT_LABELS}


def canonical_label(label: str) -> str:
    """``label`` with the spelling of Leukolab's own box labels where it is one of them in another
    case (``wbc`` -> ``WBC``); any other label as it is."""
    label = label.strip()
    return _CANONICAL.get(label.casefold(), label)


def image_name(reference: str) -> str:
    """The file name of an image reference written on any system (``C:\\scans\\a.jpg`` -> ``a.jpg``)."""
    return PureWindowsPath(reference).name


@dataclass
class Annotation:
    """The boxes of one image. ``image`` is a file name or path (relative to the dataset's image folder)."""

    image: str
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    empty: int = 0  # boxes of no area in the file (left out, with a warning)

    def of_label(self, label: str) -> list[Box]:
        return [b for b in self.boxes if b.label == label]


def _check_box(box: Box, width: int, height: int, where: str, labels: Sequence[str] | None,
               ann: Annotation | None = None) -> Box | None:
    """``box`` clipped to the image, or None for a box of no area (counted in ``ann.empty``); an
    ``AnnotationError`` for an unknown label, a box outside the image or with its corners swapped."""
    if labels is not None and box.label not in {canonical_label(label) for label in labels}:
        raise AnnotationError(f"{where}: unknown label {box.label!r} (expected one of {', '.join(labels)})")
    if (box.x0 < -_TOLERANCE or box.y0 < -_TOLERANCE or box.x1 > width + _TOLERANCE
            or box.y1 > height + _TOLERANCE):
        raise AnnotationError(
            f"{where}: box {box.label} {[round(v, 1) for v in box.as_list()]} lies outside the "
            f"{width}x{height} image")
    if box.x1 < box.x0 or box.y1 < box.y0:
        raise AnnotationError(f"{where}: box {box.label} {box.as_list()} has its corners swapped")
    box = box.clip(width, height)
    if box.area <= 0:
        log.warning("%s: skipping empty box %s %s", where, box.label, box.as_list())
        if ann is not None:
            ann.empty += 1
        return None
    return box


# ---------------------------------------------------------------- Pascal VOC
def _xml_text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _xml_number(node: ET.Element, tag: str, where: str) -> float:
    text = _xml_text(node, tag, where)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: <{tag}> is {text!r}, not a number")
    return value


def _xml_flag(parent: ET.Element, tag: str, where: str) -> bool:
    """A VOC 0/1 flag (absent or empty: 0; ``true``/``false`` as some tools write it)."""
    text = (parent.findtext(tag) or "").strip().lower()
    if text in ("", "0", "1", "false", "true"):
        return text in ("1", "true")
    raise AnnotationError(f"{where}: <{tag}> is {text!r}, not 0 or 1")


def read_voc(path: str | os.PathLike, *, labels: Sequence[str] | None = None) -> Annotation:
    """Read one Pascal VOC XML file. Unknown labels raise when ``labels`` is given."""
    where = str(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{where}: not valid XML ({exc})") from None
    except OSError as exc:
        raise AnnotationError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{where}: root element is <{root.tag}>, expected <annotation>")
    filename = image_name((root.findtext("filename") or "").strip())  # empty: the image named like the file
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{where}: missing <size>")
    width, height = int(_xml_number(size, "width", where)), int(_xml_number(size, "height", where))
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{where}: image size {width}x{height} is not positive")
    ann = Annotation(filename, width, height)
    for obj in root.findall("object"):
        name = canonical_label(_xml_text(obj, "name", where))
        bb = obj.find("bndbox")
        if bb is None:
            raise AnnotationError(f"{where}: object {name!r} has no <bndbox>")
        x0, y0, x1, y1 = (_xml_number(bb, k, where) for k in ("xmin", "ymin", "xmax", "ymax"))
        score = _xml_number(obj, "score", where) if (obj.findtext("score") or "").strip() else 1.0
        difficult = _xml_flag(obj, "difficult", where)
        box = _check_box(Box(x0, y0, x1, y1, name, score, difficult), width, height, where, labels, ann)
        if box is not None:
            ann.boxes.append(box)
    return ann


def write_voc(ann: Annotation, path: str | os.PathLike, *, with_scores: bool = False) -> None:
    """Write one Pascal VOC XML file (pixel coordinates, rounded to integers as VOC tools expect)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = Path(ann.image).name
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(ann.width)
    ET.SubElement(size, "height").text = str(ann.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for b in ann.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = b.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if b.difficult else "0"
        if with_scores:
            ET.SubElement(obj, "score").text = f"{b.score:.4f}"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), b.as_list()):
            ET.SubElement(bb, tag).text = str(int(round(v)))
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)


# ---------------------------------------------------------------- COCO
def read_coco(path: str | os.PathLike, *, labels: Sequence[str] | None = None) -> list[Annotation]:
    """Read a COCO detection JSON file (``bbox`` is ``[x, y, width, height]``) into one Annotation per image."""
    where = str(path)
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except UnicodeDecodeError:
        raise AnnotationError(f"{where}: not UTF-8 text (save it as UTF-8)") from None
    except ValueError as exc:  # JSONDecodeError, or a number too long to read
        raise AnnotationError(f"{where}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise AnnotationError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"{where}: not a COCO file (needs 'images' and 'annotations')")
    try:
        categories = {int(c["id"]): canonical_label(str(c["name"])) for c in data.get("categories", [])}
        images = {}
        for im in data["images"]:
            if int(im["id"]) in images:
                raise AnnotationError(f"{where}: image id {int(im['id'])} is given twice "
                                      f"({images[int(im['id'])].image}, {im['file_name']})")
            images[int(im["id"])] = Annotation(str(im["file_name"]), int(im["width"]), int(im["height"]))
        for a in data["annotations"]:
            img_id, cat = int(a["image_id"]), int(a["category_id"])
            if img_id not in images:
                raise AnnotationError(f"{where}: annotation {a.get('id')} refers to unknown image {img_id}")
            if cat not in categories:
                raise AnnotationError(f"{where}: annotation {a.get('id')} has unknown category {cat}")
            x, y, w, h = (float(v) for v in a["bbox"])
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise AnnotationError(f"{where}: annotation {a.get('id')} has a bbox that is not numbers: {a['bbox']}")
            ann = images[img_id]
            box = _check_box(Box(x, y, x + w, y + h, categories[cat], float(a.get("score", 1.0))),
                             ann.width, ann.height, f"{where} ({ann.image})", labels, ann)
            if box is not None:
                ann.boxes.append(box)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, AnnotationError):
            raise
        raise AnnotationError(f"{where}: malformed COCO entry ({str(exc)[:200]!r})") from None
    return list(images.values())


def write_coco(anns: Iterable[Annotation], path: str | os.PathLike, *,
               labels: Sequence[str] = DEFAULT_LABELS, with_scores: bool = False) -> None:
    """Write annotations as one COCO detection JSON file; categories are numbered from 1 in ``labels`` order."""
    anns = list(anns)
    labels = list(labels) + sorted({b.label for a in anns for b in a.boxes} - set(labels))
    cat_id = {name: i + 1 for i, name in enumerate(labels)}
    out = {"images": [], "annotations": [],
           "categories": [{"id": cat_id[n], "name": n, "supercategory": "cell"} for n in labels]}
    next_id = 1
    for img_id, ann in enumerate(anns, start=1):
        out["images"].append({"id": img_id, "file_name": ann.image, "width": ann.width, "height": ann.height})
        for b in ann.boxes:
            entry = {"id": next_id, "image_id": img_id, "category_id": cat_id[b.label],
                     "bbox": [b.x0, b.y0, b.width, b.height], "area": b.area, "iscrowd": 0}
            if with_scores:
                entry["score"] = b.score
            out["annotations"].append(entry)
            next_id += 1
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)


# ---------------------------------------------------------------- YOLO
def read_yolo(path: str | os.PathLike, *, width: int, height: int, labels: Sequence[str],
              image: str | None = None) -> Annotation:
    """Read one YOLO txt file (``class cx cy w h`` normalized to 0..1, optional score) for an image of known size."""
    where = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise AnnotationError(f"{where}: not UTF-8 text (save it as UTF-8)") from None
    except OSError as exc:
        raise AnnotationError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    ann = Annotation(image or Path(path).with_suffix(".jpg").name, width, height)
    labels = [canonical_label(label) for label in labels]
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (5, 6):
            raise AnnotationError(f"{where}:{n}: expected 'class cx cy w h', got {line!r}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
            score = float(parts[5]) if len(parts) == 6 else 1.0
            if not all(math.isfinite(v) for v in (cx, cy, w, h, score)):
                raise ValueError
        except ValueError:
            raise AnnotationError(f"{where}:{n}: not numbers: {line!r}") from None
        if not 0 <= cls < len(labels):
            raise AnnotationError(f"{where}:{n}: unknown class index {cls} (classes: {', '.join(labels)})")
        box = Box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                  labels[cls], score)
        box = _check_box(box, width, height, f"{where}:{n}", labels, ann)
        if box is not None:
            ann.boxes.append(box)
    return ann


def write_yolo(ann: Annotation, path: str | os.PathLike, *, labels: Sequence[str],
               with_scores: bool = False) -> None:
    """Write one YOLO txt file; a label missing from ``labels`` raises."""
    rows = []
    for b in ann.boxes:
        if b.label not in labels:
            raise AnnotationError(f"{path}: label {b.label!r} is not among the classes {', '.join(labels)}")
        vals = [(b.x0 + b.x1) / 2 / ann.width, (b.y0 + b.y1) / 2 / ann.height,
                b.width / ann.width, b.height / ann.height]
        row = f"{labels.index(b.label)} " + " ".join(f"{v:.6f}" for v in vals)
        rows.append(row + (f" {b.score:.4f}" if with_scores else ""))
    Path(path).write_text("\n".join(rows) + ("\n" if rows else ""), encoding="utf-8")


# ---------------------------------------------------------------- datasets (folders)
@dataclass
class Sample:
    """One image file of a dataset with its annotation."""

    image_path: Path
    annotation: Annotation


def _find_image(folder: Path, name: str, where: str) -> Path:
    """The image file an annotation names: its relative path in ``folder``, else its file name there,
    else a file of the same stem with any image suffix in any case (``a.jpg`` finds ``a.JPG`` or ``a.png``)."""
    relative = Path(os.path.normpath(folder / name.replace("\\", "/")))
    if name and relative.is_relative_to(os.path.normpath(folder)) and relative.is_file():  # never outside the dataset
        return relative
    cand = folder / image_name(name)
    if cand.is_file():
        return cand
    found = _images_by_stem(folder).get(cand.stem.casefold())
    if found is not None:
        return found
    raise AnnotationError(f"{where}: image {name!r} not found in {folder}")


_STEMS: dict[tuple[str, int], dict[str, Path]] = {}


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """A folder's image files by lower-case stem (the first by name where two share one), listed once
    for as long as the folder does not change."""
    try:
        key = (str(folder.resolve()), folder.stat().st_mtime_ns)
    except OSError:
        return {}
    if key not in _STEMS:
        index: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                index.setdefault(path.stem.casefold(), path)
        if len(_STEMS) > 64:
            _STEMS.clear()
        _STEMS[key] = index
    return _STEMS[key]


def _checked_size(sample: Sample, where: str) -> Sample:
    """``sample`` where its annotation's image size is the image's own (EXIF orientation applied);
    boxes in a size that is not the image's would sit in the wrong place, so that is an error."""
    from ml.imageio import image_size

    w, h = image_size(sample.image_path)
    ann = sample.annotation
    if (w, h) != (ann.width, ann.height):
        raise AnnotationError(f"{where}: gives the image size {ann.width}x{ann.height}, but "
                              f"{sample.image_path.name} is {w}x{h} (upright)")
    return sample


def load_dataset(root: str | os.PathLike, *, labels: Sequence[str] | None = None) -> list[Sample]:
    """Load an annotated image folder, sorted by image name. Recognized layouts:

    * Pascal VOC: ``Annotations/*.xml`` and ``JPEGImages/``;
    * COCO: a ``*.json`` file (or a folder holding exactly one) with images beside it or in ``images/``;
    * YOLO: ``images/``, ``labels/*.txt`` and ``classes.txt`` (one class name a line).
    """
    root = Path(root)
    if not root.exists():
        raise AnnotationError(f"{root}: no such file or folder")
    if root.is_dir() and (root / "Annotations").is_dir():
        img_dir = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root / "images"
        samples = []
        for xml in sorted((root / "Annotations").glob("*.xml")):
            ann = read_voc(xml, labels=labels)
            path = _find_image(img_dir, ann.image or xml.stem + ".jpg", str(xml))
            ann.image = ann.image or path.name
            samples.append(_checked_size(Sample(path, ann), str(xml)))
        if not samples:
            raise AnnotationError(f"{root}: no .xml files in Annotations/")
        return samples
    if root.is_dir() and (root / "labels").is_dir() and (root / "classes.txt").exists():
        from ml.imageio import image_size  # the upright size, from the header

        classes = [canonical_label(c) for c in (root / "classes.txt").read_text(encoding="utf-8").splitlines()
                   if c.strip()]
        if not (root / "images").is_dir():
            raise AnnotationError(f"{root}: a YOLO folder needs its images in images/ (beside labels/)")
        samples = []
        for img in sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            w, h = image_size(img)
            txt = root / "labels" / (img.stem + ".txt")
            ann = (read_yolo(txt, width=w, height=h, labels=classes, image=img.name) if txt.exists()
                   else Annotation(img.name, w, h))
            if labels is not None:
                for b in ann.boxes:
                    _check_box(b, w, h, str(txt), labels)
            samples.append(Sample(img, ann))
        return samples
    json_file = root
    if root.is_dir():
        found = sorted(root.glob("*.json"))
        if len(found) != 1:
            raise AnnotationError(
                f"{root}: not a dataset folder (expected VOC Annotations/+JPEGImages/, YOLO images/+labels/+"
                f"classes.txt, or one COCO .json file)")
        json_file = found[0]
    img_dir = json_file.parent / "images" if (json_file.parent / "images").is_dir() else json_file.parent
    anns = sorted(read_coco(json_file, labels=labels), key=lambda a: a.image)
    return [_checked_size(Sample(_find_image(img_dir, a.image, str(json_file)), a), f"{json_file} ({a.image})")
            for a in anns]
