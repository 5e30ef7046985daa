"""Demo data for a first start: the demo users, a demo patient and a few smear images, analysed."""
from __future__ import annotations

import io
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from PIL import Image

from webapp.patients.models import Patient
from webapp.patients.services import patient_create
from webapp.slides.services import slide_upload

DEMO_PATIENT = "DEMO-001"


def _demo_files(count: int) -> list[SimpleUploadedFile]:
    bccd = Path(settings.LEUKOLAB_DATASETS) / "bccd" / "JPEGImages"
    if bccd.is_dir():
        paths = _whole_cell_fields(bccd, count)
        return [SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in paths]
    from ml.localization.synthetic import synthetic_field

    files = []
    for i in range(count):
        image, _ = synthetic_field(seed=100 + i, n_wbc=1 + i % 2)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        files.append(SimpleUploadedFile(f"generated-smear-{i + 1}.png", buf.getvalue(), content_type="image/png"))
    return files


def _whole_cell_fields(images: Path, count: int, edge: int = 8) -> list[Path]:
    """The first ``count`` fields whose white cells all lie inside the field (``edge`` px from its
    sides), so the first slides a newcomer sees show whole cells; topped up with the other fields in
    order where too few do."""
    from ml.localization.formats import AnnotationError, read_voc

    paths = sorted(images.glob("*.jpg"))
    whole = []
    for path in paths:
        try:
            ann = read_voc(images.parent / "Annotations" / f"{path.stem}.xml")
        except (AnnotationError, OSError):
            continue
        wbc = ann.of_label("WBC")
        if wbc and all(b.x0 >= edge and b.y0 >= edge and b.x1 <= ann.width - edge and b.y1 <= ann.height - edge
                       for b in wbc):
            whole.append(path)
        if len(whole) == count:
            return whole
    return whole + [p for p in paths if p not in whole][:count - len(whole)]


class Command(BaseCommand):
    help = "Create the demo users, a demo patient and a few analysed demo slides (once)."

    def add_arguments(self, parser):
        parser.add_argument("--slides", type=int, default=3, help="number of demo images")

    def handle(self, *args, slides: int, **options):
        call_command("seed_users", stdout=self.stdout)
        hema = User.objects.get(username="hematologist")
        if Patient.objects.filter(identifier=DEMO_PATIENT).exists():
            self.stdout.write(f"demo patient {DEMO_PATIENT} exists; nothing to import")
            return
        with transaction.atomic():
            patient = patient_create(user=hema, identifier=DEMO_PATIENT, notes="Demo patient with public BCCD smear fields.")
            jobs = []
            for f in _demo_files(slides):
                slide, job = slide_upload(user=hema, patient=patient, files=[f], stain="Wright-Giemsa")
                jobs.append(job)
        self.stdout.write(f"demo patient {DEMO_PATIENT}: {len(jobs)} slides queued for analysis")
        if settings.LEUKOLAB_TASKS == "inline":
            from webapp.jobs import inline

            inline.wait_idle(timeout=600)
            self.stdout.write("demo slides analysed")
