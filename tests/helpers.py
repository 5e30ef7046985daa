"""Shared helpers for the suite: where the real datasets are, reading VOC boxes, image bytes, cell folders."""
from __future__ import annotations

import importlib.util
import io
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("LEUKOLAB_DATASETS", REPO.parent / "shared" / "datasets"))
BCCD = DATASETS / "bccd"


def load_bench(name: str):
    """The benchmark script ``bench/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bccd_available() -> bool:
    return (BCCD / "JPEGImages").is_dir() and (BCCD / "Annotations").is_dir()


def voc_boxes(xml_path: Path, label: str = "WBC") -> list[list[float]]:
    root = ET.parse(xml_path).getroot()
    out = []
    for obj in root.iter("object"):
        if obj.findtext("name") == label:
            bb = obj.find("bndbox")
            out.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    return out


def iou(a, b) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` lists, by the library's own definition."""
    from ml.boxes import Box

    return Box(*a).iou(Box(*b))


def smear_field(index: int = 0) -> tuple[str, bytes, list[list[float]]]:
    """A real BCCD field (name, JPEG bytes, WBC boxes) when the data is there, otherwise a generated one."""
    if bccd_available():
        xmls = sorted((BCCD / "Annotations").glob("*.xml"))
        for xml in xmls[index:]:
            boxes = voc_boxes(xml)
            jpg = BCCD / "JPEGImages" / (xml.stem + ".jpg")
            if len(boxes) == 1 and jpg.exists():
                return jpg.name, jpg.read_bytes(), boxes
    from ml.localization.synthetic import synthetic_field

    image, boxes = synthetic_field(seed=index)
    return f"generated-{index}.png", image_bytes(image, "PNG"), [b.as_list() for b in boxes if b.label == "WBC"]


def image_bytes(array: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def write_class_folders(cells, data: Path) -> None:
    """Save a :class:`ml.classification.data.CellSet` as a class-per-folder dataset under ``data``
    (numbered PNG files), as a user's cells would come."""
    for i, (image, label) in enumerate(zip(cells.images, cells.labels)):
        folder = data / cells.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")


def needs_row_locks() -> None:
    """Skip a test of concurrent transactions where the database is SQLite (it writes one at a time)."""
    import pytest
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite writes one transaction at a time)")


def in_a_thread(work, outcome: dict):
    """Start ``work()`` in a thread of its own, with a database connection of its own, as a second request
    would: ``outcome`` gets ``result``, an ``error`` (ApplicationError: what the request would answer) or
    a ``crash`` (any other exception: a 500). Returns the started thread."""
    import threading

    from django.db import connections

    from webapp.common.exceptions import ApplicationError

    def run():
        try:
            outcome["result"] = work()
        except ApplicationError as exc:
            outcome["error"] = exc
        except Exception as exc:  # noqa: BLE001 - what a request would have turned into a 500
            outcome["crash"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
