"""Datasets: class-per-folder images (PBC or crops exported by the webapp), the tecom second lab,
and generated synthetic cells. Every image is decoded once and cached, downscaled, outside the repo.

Each sample is stored as a *context crop* around the cell's box (found with the classical
localizer, as in a smear) plus that box in the crop's pixels, so training can re-apply the crop
rule with jittered boxes and the crops match what the worker cuts from a smear.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.boxes import Box
from ml.classification.crop import cell_crop, crop_window
from ml.imageio import load_image

log = logging.getLogger(__name__)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
CACHE_MARGIN = 0.5  # context kept around the box in the cache (covers the rule's margin + jitter)
CACHE_SIZE = 112  # side of the cached context crop; larger for models whose input needs more
CACHE_VERSION = "v1"
PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
TECOM_CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def datasets_root() -> Path:
    env = os.environ.get("LEUKOLAB_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def cache_root() -> Path:
    return Path(os.environ.get("LEUKOLAB_CACHE", Path.home() / ".cache" / "leukolab"))


@dataclass
class CellSet:
    """Context crops (N x S x S x 3 uint8), the cell box in each crop, labels and names."""

    images: np.ndarray
    boxes: np.ndarray  # N x 4 float32, pixels of the context crop
    labels: np.ndarray  # N int64
    classes: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def with_cells_of(self, other: "CellSet") -> "CellSet":
        """These cells followed by ``other``'s, in these classes: ``other``'s labels are mapped by class name.
        A class of ``other``'s cells that is not one of these is a ``ValueError`` naming it."""
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({other.classes[k] for k in set(other.labels.tolist())} - set(index))
        if unknown:
            raise ValueError(f"cells of {', '.join(unknown)}: not a class of {', '.join(self.classes)}")
        if other.images.shape[1:] != self.images.shape[1:]:
            raise ValueError(f"crops of {other.images.shape[1:]} cannot join crops of {self.images.shape[1:]}")
        labels = np.array([index[other.classes[k]] for k in other.labels.tolist()], np.int64)
        return CellSet(np.concatenate([self.images, other.images]), np.concatenate([self.boxes, other.boxes]),
                       np.concatenate([self.labels, labels]), self.classes, self.names + other.names)

    def subset(self, idx) -> "CellSet":
        idx = np.asarray(idx)
        return CellSet(self.images[idx], self.boxes[idx], self.labels[idx], self.classes,
                       [self.names[i] for i in idx])

    def box(self, i: int) -> Box:
        return Box(*map(float, self.boxes[i]))

    def crops(self, margin: float, out_size: int) -> np.ndarray:
        """All samples cut with the crop rule, as the model sees them at inference."""
        return np.stack([cell_crop(self.images[i], self.box(i), margin, out_size) for i in range(len(self))])


# folders beside the class folders that are never classes: what archivers and file systems leave behind
NOT_CLASSES = {"__MACOSX", "$RECYCLE.BIN", "System Volume Information"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())


def list_class_folders(data_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes (sub-folders holding images, by name) and every ``(image, class index)``. A
    sub-folder without images is no class (a warning names it)."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is a file; --data is a folder of class sub-folders (<class>/<image>.jpg)")
    folders = sorted(p for p in data_dir.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_CLASSES)
    classes, items = [], []
    for folder in folders:
        found = _images_in(folder)
        nested = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _images_in(p)]
        if nested:
            log.warning("%s: images in its sub-folders (%s) are not read; a class's images lie in its own folder",
                        folder, ", ".join(sorted(p.name for p in nested)[:3]))
        if not found:
            log.warning("%s holds no images (%s): not a class", folder, ", ".join(sorted(IMAGE_EXTS)))
            continue
        items += [(p, len(classes)) for p in found]
        classes.append(folder.name)
    if not items:
        raise ValueError(f"{data_dir} holds no images in class sub-folders (expected <class>/<image>.jpg)")
    return classes, items


def central_cell_box(image: np.ndarray, localizer=None) -> Box:
    """The box of the cell a single-cell image is centred on, found as in a smear.

    Takes the localizer's box that contains the image centre (the largest such), else the one
    nearest to it; without any detection, a centred box of half the image.
    """
    h, w = image.shape[:2]
    cx, cy = w / 2.0, h / 2.0
    boxes = localizer.detect(image) if localizer is not None else []
    inside = [b for b in boxes if b.x0 <= cx <= b.x1 and b.y0 <= cy <= b.y1]
    if inside:
        return max(inside, key=lambda b: b.area)
    if boxes:
        return min(boxes, key=lambda b: ((b.x0 + b.x1) / 2 - cx) ** 2 + ((b.y0 + b.y1) / 2 - cy) ** 2)
    return Box(w * 0.25, h * 0.25, w * 0.75, h * 0.75)


BOX_FILE = "boxes.csv"  # beside the class folders: each image's cell box, where a person drew it


def read_box_file(data_dir: Path) -> dict[str, Box]:
    """The boxes of a class-per-folder dataset's ``boxes.csv`` (``image,x0,y0,x1,y1``; ``image`` is
    ``<class>/<file>``, the box in that image's pixels), empty where there is no such file. Images
    it lists are trained on that box; the others on the box the classical localizer finds."""
    path = Path(data_dir) / BOX_FILE
    if not path.is_file():
        return {}
    boxes, lines = {}, {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's "CSV UTF-8" starts with a BOM
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    box = Box(*(float(row[k]) for k in ("x0", "y0", "x1", "y1")))
                    name = row["image"].strip().replace("\\", "/")
                    if not all(math.isfinite(v) for v in box.as_list()):
                        raise ValueError
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ValueError(f"{path}:{n}: expected image,x0,y0,x1,y1 with numbers, got {row}") from None
                if not (box.x1 > box.x0 and box.y1 > box.y0):
                    raise ValueError(f"{path}:{n}: the box of {name} is empty or its corners are swapped")
                if name in lines:
                    raise ValueError(f"{path}:{n}: {name} has a box already (line {lines[name]})")
                boxes[name], lines[name] = box, n
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return boxes


def box_file_text(boxes: dict[str, Box]) -> str:
    """The text of a ``boxes.csv`` (see :func:`read_box_file`)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["image", "x0", "y0", "x1", "y1"])
    for name, box in sorted(boxes.items()):
        out.writerow([name, *(f"{v:.2f}" for v in box.as_list())])
    return buf.getvalue()


def write_box_file(data_dir: Path, boxes: dict[str, Box]) -> None:
    """Write ``boxes.csv`` (see :func:`read_box_file`)."""
    (Path(data_dir) / BOX_FILE).write_text(box_file_text(boxes))


def export_crop(image: np.ndarray, box: Box, max_side: int = 512) -> tuple[np.ndarray, Box]:
    """A cell as a class-per-folder dataset keeps it (the webapp's export of reviewed cells): a
    square about its box with ``CACHE_MARGIN`` of the box's longer side as context on each side, at
    the image's resolution (at most ``max_side`` pixels), and the box in the crop's pixels."""
    _, _, side = crop_window(box, CACHE_MARGIN)
    crop, inner = context_crop(image, box, int(min(max_side, max(16, round(side)))))
    return crop, Box(*map(float, inner))


def cache_size_for(img_size: int, margin: float = 0.2) -> int:
    """Side of the context crop that keeps a model's input at the cache's full resolution.

    The crop rule takes ``(1 + 2 margin) / (1 + 2 CACHE_MARGIN)`` of the context crop's side.
    Rounded up to a multiple of 16, never below ``CACHE_SIZE`` (enough up to 78 px at margin 0.2).
    """
    need = img_size * (1 + 2 * CACHE_MARGIN) / (1 + 2 * margin)
    return max(CACHE_SIZE, int(-(-need // 16) * 16))


def context_crop(image: np.ndarray, box: Box, size: int = CACHE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Cut the cache's context crop around ``box``; return it and the box in its pixels."""
    crop = cell_crop(image, box, CACHE_MARGIN, size)
    _, _, side = crop_window(box, CACHE_MARGIN)
    s = size / side
    c = size / 2.0
    bw, bh = box.width * s, box.height * s
    return crop, np.array([c - bw / 2, c - bh / 2, c + bw / 2, c + bh / 2], np.float32)


def decode_threads() -> int:
    """Threads that decode a dataset: ``LEUKOLAB_DECODE_THREADS``, else one per core this process may
    use (at most 8)."""
    from ml.device import usable_cores

    return max(1, int(os.environ.get("LEUKOLAB_DECODE_THREADS") or min(8, usable_cores())))


def load_folder(data_dir: Path, *, progress: Callable[[float, str], None] | None = None,
                use_cache: bool = True, per_class: int | None = None, size: int = CACHE_SIZE) -> CellSet:
    """Load a class-per-folder dataset as a :class:`CellSet`, cached under :func:`cache_root`.

    ``per_class`` keeps only the first images (by name) of each class, for quick tests; ``size``
    is the side of the context crops (see :func:`cache_size_for`).
    """
    from ml.localization import load_localizer

    classes, items = list_class_folders(data_dir)
    given = read_box_file(data_dir)
    listed = {f"{classes[c]}/{p.name}" for p, c in items}
    unmatched = sorted(set(given) - listed)
    if unmatched:
        log.warning("%s: %d of its %d boxes name no image of %s (e.g. %s); names are <class folder>/<file>",
                    Path(data_dir) / BOX_FILE, len(unmatched), len(given), data_dir, ", ".join(unmatched[:3]))
    if per_class:
        items = [it for c in range(len(classes)) for it in [x for x in items if x[1] == c][:per_class]]
    localizer = load_localizer("classical")
    # The key covers the files (with their class folders) and the localizer's settings: a retuned
    # localizer re-crops, a file moved to another class or a class renamed is read again.
    key = hashlib.sha1(
        (CACHE_VERSION + repr(getattr(localizer, "config", "")) + str(Path(data_dir).resolve()) + f"|{size}"
         + "|".join(f"{classes[c]}/{p.name}:{p.stat().st_size}" for p, c in items)
         + "|".join(f"{k}:{b.as_list()}" for k, b in sorted(given.items()))).encode("utf-8", "surrogateescape")
    ).hexdigest()[:16]
    cache = cache_root() / f"cells-{Path(data_dir).name}-{key}.npz"
    if use_cache and cache.exists():
        z = np.load(cache, allow_pickle=False)
        return CellSet(z["images"], z["boxes"], z["labels"], [str(c) for c in z["classes"]],
                       [str(n) for n in z["names"]])
    images = np.zeros((len(items), size, size, 3), np.uint8)
    boxes = np.zeros((len(items), 4), np.float32)
    ok = np.ones(len(items), bool)

    def decode(i: int) -> None:
        p, c = items[i]
        try:
            image = load_image(p)
        except Exception:  # unreadable file: skip it (a warning lists them), never fail a whole training
            ok[i] = False
            return
        name = f"{classes[c]}/{p.name}"
        box = given.get(name)
        if box is not None:
            h, w = image.shape[:2]
            if box.x0 < -1 or box.y0 < -1 or box.x1 > w + 1 or box.y1 > h + 1:
                raise ValueError(f"{Path(data_dir) / BOX_FILE}: the box of {name} {[round(v, 1) for v in box.as_list()]} "
                                 f"lies outside that {w}x{h} image (boxes are in the image's own pixels)")
        else:
            box = central_cell_box(image, localizer)
        images[i], boxes[i] = context_crop(image, box, size)

    # Decoding, finding the cell and cropping run in OpenCV and Pillow, which let go of the GIL: one
    # thread a core (each image's answer is its own, whatever the threads).
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        for done, _ in enumerate(pool.map(decode, range(len(items)))):
            if progress and done % 200 == 0:
                progress(done / len(items), f"decoding {data_dir} {done}/{len(items)}")
    if not ok.all():
        bad = [str(p) for (p, _), good in zip(items, ok) if not good]
        log.warning("skipped %d image(s) that cannot be read: %s%s", len(bad), ", ".join(bad[:5]),
                    " ..." if len(bad) > 5 else "")
    items = [it for it, good in zip(items, ok) if good]
    images, boxes = images[ok], boxes[ok]
    kept = sorted({c for _, c in items})
    if len(kept) < len(classes):  # a class all of whose images were unreadable is no class
        log.warning("no readable image in %s: not a class", ", ".join(c for k, c in enumerate(classes) if k not in kept))
        remap = {c: k for k, c in enumerate(kept)}
        classes = [classes[c] for c in kept]
        items = [(p, remap[c]) for p, c in items]
    if not items:
        raise ValueError(f"{data_dir}: none of its images can be read")
    labels = np.array([c for _, c in items], np.int64)
    names = [f"{classes[c]}/{p.name}" for p, c in items]
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, boxes=boxes, labels=labels, classes=np.array(classes), names=np.array(names))
        os.replace(tmp, cache)
    return CellSet(images, boxes, labels, classes, names)


def fixed_split(names: list[str], labels: np.ndarray, val: float = 0.1, test: float = 0.2, seed: int = 0):
    """Deterministic stratified split by a hash of each file name: ``(train, val, test)`` indices.

    Documented split of the benchmark: per class, files are ordered by ``sha1(f"{seed}:{name}")``;
    the first ``test`` fraction is test, the next ``val`` fraction validation, the rest training.
    """
    tr, va, te = [], [], []
    for c in np.unique(labels):
        idx = [i for i in range(len(names)) if labels[i] == c]
        idx.sort(key=lambda i: hashlib.sha1(f"{seed}:{names[i]}".encode()).hexdigest())
        n_te, n_va = int(round(len(idx) * test)), int(round(len(idx) * val))
        te += idx[:n_te]
        va += idx[n_te:n_te + n_va]
        tr += idx[n_te + n_va:]
    return (np.array(sorted(tr), np.int64), np.array(sorted(va), np.int64), np.array(sorted(te), np.int64))


def kfold_indices(labels: np.ndarray, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(np.asarray(labels))
    if k < 2 or counts[counts > 0].min() < k:
        raise ValueError(f"{k}-fold cross-validation needs k >= 2 and at least k images of every class "
                         f"(the smallest class has {counts[counts > 0].min()})")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(labels)), labels)]


def kfold_splits(names: list[str], labels: np.ndarray, k: int, seed: int = 0,
                 val: float = 0.1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """k-fold cross-validation as ``(train, validation, test)`` indices per fold: each fold's test
    part is scored only; its validation part (``val`` of the other folds' images, per class, as in
    :func:`fixed_split`) chooses the checkpoint and fits the temperature, so no fold is scored by a
    model chosen on it."""
    labels = np.asarray(labels)
    out = []
    for rest, te in kfold_indices(labels, k, seed):
        tr, va, _ = fixed_split([names[i] for i in rest], labels[rest], val=val, test=0.0, seed=seed)
        out.append((rest[tr], rest[va], te))
    return out


def load_tecom(tecom_dir: Path) -> tuple[list[np.ndarray], list[Box], list[str], list[str]]:
    """Images, expert WBC boxes, labels and names of the tecom second lab (validation only)."""
    tecom_dir = Path(tecom_dir)
    images, boxes, labels, names = [], [], [], []
    table = tecom_dir / "labels.csv"
    with open(table, newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            if not row.get("image") or not row.get("category"):
                raise ValueError(f"{table}:{n}: expected the columns image,category, got {row}")
            name, category = row["image"].strip(), row["category"].strip().lower()
            if category not in TECOM_CLASSES:
                raise ValueError(f"{table}:{n}: category {row['category']!r} is none of {', '.join(TECOM_CLASSES)}")
            img_path = next(iter(sorted((tecom_dir / "JPEGImages").glob(f"{name}.*"))), None)
            xml = tecom_dir / "Annotations" / f"{name}.xml"
            if img_path is None or not xml.is_file():
                raise ValueError(f"{table}:{n}: {name} has no image in JPEGImages/ or no box in Annotations/")
            bb = ET.parse(xml).getroot().find("object/bndbox")
            if bb is None:
                raise ValueError(f"{xml}: no <object><bndbox>")
            box = Box(*(float(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")))
            images.append(load_image(img_path))
            boxes.append(box)
            labels.append(category)
            names.append(name)
    return images, boxes, labels, names


def synthetic_cells(n_per_class: int = 60, seed: int = 0, classes: list[str] | None = None) -> CellSet:
    """Generated stained-cell crops, one look per class, for tests and data-less first starts.

    Each class differs by nucleus shape (lobes), nucleus and cytoplasm colour and cell size,
    so a model can learn them; it says nothing about real blood.
    """
    import cv2

    classes = classes or PBC_CLASSES
    rng = np.random.default_rng(seed)
    n = n_per_class * len(classes)
    images = np.zeros((n, CACHE_SIZE, CACHE_SIZE, 3), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    for i, c in enumerate(labels):
        img = np.full((CACHE_SIZE, CACHE_SIZE, 3), (235, 215, 215), np.uint8)
        for _ in range(6):  # red cells in the background
            p = tuple(int(v) for v in rng.integers(0, CACHE_SIZE, 2))
            cv2.circle(img, p, int(rng.integers(10, 16)), (215, 150, 150), -1)
        ctr = CACHE_SIZE // 2
        r = int(22 + 2 * (c % 4) + rng.integers(-2, 3))
        cyto = (int(180 + 9 * c) % 256, int(140 + 17 * c) % 256, int(200 - 11 * c) % 256)
        cv2.circle(img, (ctr, ctr), r, cyto, -1)
        lobes = 1 + c % 4
        nuc = (int(90 + 13 * c) % 256, 40, int(120 + 7 * c) % 256)
        for k in range(lobes):
            a = 2 * np.pi * k / lobes + rng.uniform(0, 6.3)
            off = 0 if lobes == 1 else r * 0.4
            p = (int(ctr + off * np.cos(a)), int(ctr + off * np.sin(a)))
            cv2.circle(img, p, max(4, int(r * (0.7 if lobes == 1 else 0.35))), nuc, -1)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        images[i] = cv2.GaussianBlur(img, (3, 3), 0)
        boxes[i] = (ctr - r, ctr - r, ctr + r, ctr + r)
    names = [f"{classes[c]}/synthetic_{i:05d}" for i, c in enumerate(labels)]
    return CellSet(images, boxes, labels.astype(np.int64), list(classes), names)
