"""The minimal UI in a real browser: a hematologist logs in, creates a patient, uploads a smear,
watches it get analyzed and sees the cell boxes and the differential count.

Drives Debian's Chromium (never a downloaded browser) through the `playwright` package against
pytest-django's live server, which serves the built frontend (`frontend/dist`) like production does.
Skips when Chromium, playwright or the built frontend is missing.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO, smear_field

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("LEUKOLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DIST_INDEX = REPO / "frontend" / "dist" / "index.html"
PASSWORD = "pw-for-tests-123"  # what tests/conftest.py's make_user gives every user
ANALYSIS_TIMEOUT_MS = 180_000


@pytest.fixture
def browser():
    """Chromium through playwright's sync API. Its event loop makes Django refuse ORM calls in this
    thread while the browser is open, so tests list their data fixtures before `browser`."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (see requirements.txt)")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built (cd frontend && npm ci && npm run build)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where screenshots go: $LEUKOLAB_E2E_SCREENSHOTS if set (to look at them), else the test's tmp dir."""
    folder = Path(os.environ.get("LEUKOLAB_E2E_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open_page(browser):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def _log_in(page, live_server, username: str) -> None:
    page.goto(live_server.url + "/")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("form.login-card button[type=submit]")
    page.wait_for_selector("#current-user")


def _wait_idle_jobs() -> None:
    """Let in-process analysis threads finish before the database is flushed."""
    from django.conf import settings

    if getattr(settings, "LEUKOLAB_TASKS", "") == "inline":
        from webapp.jobs import inline

        inline.wait_idle(timeout=120)


@pytest.fixture
def hematologist(make_user):
    return make_user("hematologist", username="hema")


@pytest.fixture
def annotator_and_patient(make_user, hematologist):
    from webapp.patients.services import patient_create

    make_user("annotator", username="anno")
    return patient_create(user=hematologist, identifier="E2E-002")


def test_hematologist_uploads_a_smear_and_sees_boxes_and_differential(
    hematologist, live_server, job_runner, tmp_path, screenshots, browser
):
    name, data, _true_boxes = smear_field(0)
    smear = tmp_path / name
    smear.write_bytes(data)

    page, errors = _open_page(browser)
    try:
        # A wrong password is shown as the API's message.
        page.goto(live_server.url + "/")
        page.fill("#username", "hema")
        page.fill("#password", "not-the-password")
        page.click("form.login-card button[type=submit]")
        assert "Wrong username or password" in page.locator(".alert-error").inner_text()

        page.fill("#password", PASSWORD)
        page.click("form.login-card button[type=submit]")
        page.wait_for_selector("#current-user")

        page.fill("#patient-identifier", "E2E-001")
        page.fill("#patient-notes", "Created by the browser test")
        page.click("#new-patient-form button[type=submit]")
        page.wait_for_selector("h1:has-text('Patient E2E-001')")

        # A file that is not an image is refused by the API, and the user reads why.
        not_an_image = tmp_path / "notes.png"
        not_an_image.write_text("these are notes, not a smear")
        page.set_input_files("#slide-images", str(not_an_image))
        page.click("#upload-form button[type=submit]")
        assert page.locator("#upload-form .alert-error").inner_text().strip()
        assert page.locator("#slide-table").count() == 0 and page.get_by_text("No slides yet.").is_visible()

        page.set_input_files("#slide-images", str(smear))
        page.click("#upload-form button[type=submit]")
        page.wait_for_url(re.compile(r"#/slides/\d+$"))
        page.wait_for_selector(".status-card [data-status]")
        page.screenshot(path=str(screenshots / "e2e-1-uploaded.png"))

        page.wait_for_selector(".status-card [data-status=analyzed]", timeout=ANALYSIS_TIMEOUT_MS)
        viewer = page.wait_for_selector("#slide-viewer[data-image-state=loaded]")
        boxes = int(viewer.get_attribute("data-box-count"))
        assert boxes >= 1, "the analysis found no white blood cell in a smear that has one"
        assert page.locator("#cell-table tbody tr").count() == boxes
        assert page.locator("#slide-viewer canvas").count() >= 1

        differential = page.locator("#differential-table")
        assert differential.is_visible()
        assert differential.locator("tbody tr").count() >= 1
        assert differential.locator("tfoot").inner_text().split()[-1] == str(boxes)
        assert "%" in differential.locator("tbody").inner_text()

        page.locator("#cell-table tbody tr").first.click()
        page.screenshot(path=str(screenshots / "e2e-2-analyzed.png"), full_page=True)

        # The slide is listed on its patient's page as analyzed.
        page.click(".crumbs a")
        page.wait_for_selector("#slide-table [data-status=analyzed]")
        page.screenshot(path=str(screenshots / "e2e-3-patient.png"))

        # the same identifier typed in another case is that patient: the form says so and leads to it
        page.click("nav a[href='#/patients']")
        page.fill("#patient-identifier", "e2e-001")
        page.click("#new-patient-form button[type=submit]")
        assert "already exists in your lab (as 'E2E-001')" in page.inner_text("#new-patient-form .alert-error")
        page.click("#existing-patient")
        page.wait_for_selector("h1:has-text('Patient E2E-001')")
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()
        _wait_idle_jobs()


def test_annotator_is_not_offered_patient_creation_or_upload(annotator_and_patient, live_server, browser):
    patient = annotator_and_patient
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "anno")
        page.wait_for_selector("#patient-table")
        assert page.locator("#new-patient-form").count() == 0

        page.click("#patient-table a:has-text('E2E-002')")
        page.wait_for_selector("h1:has-text('Patient E2E-002')")
        page.wait_for_selector("text=No slides yet.")
        assert page.locator("#upload-form").count() == 0
        assert page.url.endswith(f"#/patients/{patient.pk}")
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


@pytest.fixture
def analyzed_scan(hematologist):
    """An 8000x6000 scan with three small cells (60 px boxes), as an analysis would have left it: a
    cell is a few screen pixels when the whole scan is in view."""
    import io

    import numpy as np
    from django.core.files.base import ContentFile
    from django.utils import timezone
    from PIL import Image

    from webapp.cells.models import Cell
    from webapp.patients.services import patient_create
    from webapp.slides.models import Slide, SlideImage

    patient = patient_create(user=hematologist, identifier="E2E-SCAN")
    slide = Slide.objects.create(patient=patient, uploaded_by=hematologist, status=Slide.Status.ANALYZED,
                                 analyzed_at=timezone.now())
    y, x = np.mgrid[:600, :800]
    small = np.stack([200 + 40 * np.sin(x / 50), 170 + 40 * np.cos(y / 40), 190 + 0 * x], -1).astype(np.uint8)
    buf = io.BytesIO()
    scan = Image.fromarray(small).resize((8000, 6000))
    scan.save(buf, format="JPEG", quality=80)
    image = SlideImage(slide=slide, filename="scan.jpg", format="JPEG", width=8000, height=6000,
                       size_bytes=len(buf.getvalue()), sha256="0" * 64)
    image.file.save("scan.jpg", ContentFile(buf.getvalue()), save=True)
    from webapp.slides.services import slide_image_tiles_ensure

    slide_image_tiles_ensure(image=image, array=np.asarray(scan))  # larger than the preview: tiles to zoom into
    assert image.tile_levels == 1
    for i, (cx, cy) in enumerate([(1000, 900), (4000, 3000), (7400, 5500)]):
        Cell.objects.create(slide=slide, image=image, x0=cx - 30, y0=cy - 30, x1=cx + 30, y1=cy + 30,
                            source=Cell.Source.MODEL, predicted_class=["neutrophil", "lymphocyte", "monocyte"][i],
                            probabilities={"neutrophil": 0.9}, confidence=0.9)
    return slide


def _view(page) -> list[float]:
    return [float(v) for v in page.get_attribute("#slide-viewer", "data-view").split(",")]


def test_a_cell_chosen_in_the_table_is_brought_into_view_on_a_large_scan(analyzed_scan, live_server, screenshots, browser):
    slide = analyzed_scan
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        page.wait_for_selector("#slide-viewer[data-box-count='3']")
        whole = _view(page)
        assert whole[2] - whole[0] >= 8000 * 0.99  # the whole scan in view: a cell is a speck
        fitted = page.get_attribute("#slide-viewer", "data-view")
        page.locator("#cell-table tbody tr").nth(2).click()  # the cell near the far corner
        page.wait_for_function("(before) => document.querySelector('#slide-viewer').dataset.view !== before", arg=fitted)
        x0, y0, x1, y1 = _view(page)
        assert x0 < 7400 - 30 and 7400 + 30 < x1 and y0 < 5500 - 30 and 5500 + 30 < y1  # in view...
        assert 60 / (x1 - x0) > 0.1  # ...and large enough to see (it was under 1 % of the view's width)
        # zoomed in past the image's detail: the full-resolution tiles around the cell are drawn
        page.wait_for_selector("#slide-viewer[data-tiles-loaded]")
        assert 1 <= int(page.get_attribute("#slide-viewer", "data-tiles-loaded")) <= 4
        page.screenshot(path=str(screenshots / "e2e-4-scan-cell.png"))
        # a cell already in view and large enough is shown where it is: the view does not move
        before = _view(page)
        page.locator("#cell-table tbody tr").nth(2).click()
        page.wait_for_timeout(300)
        assert _view(page) == before
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


def _analyzed_field(hematologist, identifier: str, monkeypatch):
    """A BCCD field uploaded and analyzed here, the test running the jobs itself (none is dispatched)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.jobs.models import Job
    from webapp.jobs.services import job_execute
    from webapp.patients.services import patient_create
    from webapp.slides.services import slide_upload

    monkeypatch.setattr("webapp.jobs.services.job_dispatch", lambda **kw: None)
    patient = patient_create(user=hematologist, identifier=identifier)
    name, data, _ = smear_field(0)
    slide, job = slide_upload(user=hematologist, patient=patient, files=[SimpleUploadedFile(name, data)])
    assert job_execute(job_id=job.pk).status == Job.Status.SUCCEEDED
    return slide


@pytest.fixture
def slide_with_a_drawn_box(hematologist, make_user, active_classifier, monkeypatch):
    """An analyzed field and a box an annotator drew on it, its model answer queued, not yet run."""
    from webapp.cells.services import cell_create
    from webapp.jobs.models import Job

    slide = _analyzed_field(hematologist, "E2E-ANSWER", monkeypatch)
    model_cell = slide.cells.first()
    x0, y0, x1, y1 = model_cell.box
    drawn = cell_create(image=slide.images.get(), box=[x0 + 3, y0 + 3, x1 - 3, y1 - 3], label="",
                        user=make_user("annotator", username="anno"))
    return slide, drawn, Job.objects.get(kind="cell_classify", params__slide_id=slide.pk)


def test_a_box_drawn_by_hand_shows_the_models_answer_when_it_comes(slide_with_a_drawn_box, live_server, screenshots, browser):
    import threading

    from webapp.jobs.services import job_execute

    slide, drawn, job = slide_with_a_drawn_box
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        row = page.locator(f"#cell-table tr[data-cell-id='{drawn.pk}']")
        row.wait_for()
        assert "answering" in row.inner_text() and "added by a person" in row.inner_text()
        assert "unclassified" in page.inner_text("#differential").lower()
        row.click()
        assert "answering for the box" in page.inner_text("#cell-detail")
        assert page.locator("#cell-detail img.heatmap-large").count() == 0
        # the job runs (in a thread of its own: this one's event loop belongs to the browser)
        worker = threading.Thread(target=job_execute, kwargs={"job_id": job.pk})
        worker.start()
        worker.join(120)
        page.wait_for_selector("#cell-detail img.heatmap-large", timeout=20_000)
        row = page.locator(f"#cell-table tr[data-cell-id='{drawn.pk}']")
        assert "answering" not in row.inner_text() and "selected" in (row.get_attribute("class") or "")
        detail = page.inner_text("#cell-detail")
        assert "answering" not in detail and "drawn by a person" in detail
        differential = page.inner_text("#differential")
        assert "unclassified" not in differential.lower()
        page.click("#cell-history summary")
        page.wait_for_selector("#cell-history li >> text=the model answered")
        history = page.locator("#cell-history li").all_inner_texts()
        assert len(history) == 2 and history[0].endswith("anno drew the box") and "for the box as it was" in history[1]
        page.screenshot(path=str(screenshots / "e2e-5-drawn-box-answered.png"))
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


@pytest.fixture
def analyzed_field(hematologist, make_user, monkeypatch):
    """An analyzed field (no classifier) and an annotator of the lab."""
    make_user("annotator", username="anno")
    slide = _analyzed_field(hematologist, "E2E-BOXES", monkeypatch)
    image = slide.images.get()
    return slide, image.filename, image.width, image.height, slide.cells.count()


def test_an_annotator_adds_boxes_from_a_file_and_downloads_the_training_data(analyzed_field, live_server, tmp_path, screenshots, browser):
    import io
    import zipfile

    from ml.boxes import Box
    from ml.localization.formats import Annotation, write_voc

    slide, filename, width, height, found = analyzed_field
    write_voc(Annotation(filename, width, height, [Box(4, 4, 70, 66), Box(100, 300, 160, 360, label="RBC")]), tmp_path / "f.xml")
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "anno")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        page.wait_for_selector("#training-data")
        assert page.locator("#cell-table tbody tr").count() == found
        page.set_input_files("#box-files", files=[{"name": "field.xml", "mimeType": "text/xml", "buffer": (tmp_path / "f.xml").read_bytes()}])
        page.click("#add-boxes")
        page.wait_for_function(f"document.querySelectorAll('#cell-table tbody tr').length === {found + 1}")
        assert "1 box added; skipped: 1 RBC" in page.inner_text("#box-import-result")
        assert "added by a person" in page.inner_text("#cell-table")
        page.screenshot(path=str(screenshots / "e2e-6-boxes-added.png"))
        # the download links hand out zips the ml commands read
        href = page.get_attribute("#training-data a:text('Pascal VOC')", "href")
        r = page.request.get(live_server.url + href)
        assert r.status == 200 and r.headers["content-type"] == "application/zip"
        assert int(r.headers["content-length"]) == len(r.body())  # streamed, its size told first
        names = zipfile.ZipFile(io.BytesIO(r.body())).namelist()
        assert any(n.startswith("Annotations/") for n in names) and any(n.startswith("JPEGImages/") for n in names)
        r = page.request.get(live_server.url + page.get_attribute("#training-data a:text(\"the model's classes\")", "href"))
        assert r.status == 400  # this slide's cells have no class (no classifier): the answer says so
        assert "no cell with a class" in r.json()["message"]
        # a file that is no box file is refused by name, and nothing is added
        page.set_input_files("#box-files", files=[{"name": "notes.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4"}])
        page.click("#add-boxes")
        page.wait_for_selector("text=notes.pdf: not a box file")
        assert page.locator("#cell-table tbody tr").count() == found + 1
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


def _screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Where a point of the image (its pixels) is on the screen, from the part of the image in view."""
    x0, y0, x1, _ = _view(page)
    frame = page.locator("#slide-viewer .konvajs-content").bounding_box()
    scale = frame["width"] / (x1 - x0)
    return frame["x"] + (x - x0) * scale, frame["y"] + (y - y0) * scale


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*_screen_point(page, *start))
    page.mouse.down()
    page.mouse.move(*_screen_point(page, *end), steps=8)
    page.mouse.up()


def test_an_annotator_draws_moves_resizes_and_deletes_a_box_on_the_image(analyzed_field, live_server, screenshots, browser):
    """Draw mode: a drag draws a box, which is stored and selected; the selected box moves by dragging and
    grows by its corner handle; "Delete this box" removes it, Ctrl+Z or "Undo delete" brings it back as it
    was; each change is in the slide's history, the annotator's."""
    slide, filename, width, height, found = analyzed_field
    page, errors = _open_page(browser)

    def stored(cell_id: int):
        return page.request.get(f"{live_server.url}/api/cells/{cell_id}/")

    def wait_box(cell_id: int, want: list[float]) -> None:
        for _ in range(50):
            box = stored(cell_id).json()["box"]
            if all(abs(a - b) <= 3 for a, b in zip(box, want)):
                page.wait_for_selector("#slide-viewer:not(.saving)")  # and the page has drawn it again
                return
            page.wait_for_timeout(100)
        raise AssertionError(f"the box is {box}, not about {want}")

    try:
        _log_in(page, live_server, "anno")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        page.wait_for_selector(f"#slide-viewer[data-box-count='{found}'][data-image-state='loaded']")
        page.click("#draw-box")
        page.wait_for_selector("#slide-viewer[data-mode='draw']")
        _drag(page, (300, 40), (400, 130))
        page.wait_for_selector(f"#slide-viewer[data-box-count='{found + 1}']")
        row = page.locator("#cell-table tr.selected")
        row.wait_for()
        cell_id = int(row.get_attribute("data-cell-id"))
        wait_box(cell_id, [300, 40, 400, 130])
        assert "added by a person" in row.inner_text()
        page.keyboard.press("Escape")
        page.wait_for_selector("#slide-viewer[data-mode='view']")

        _drag(page, (350, 85), (380, 105))  # the selected box, by its middle: moved by (30, 20)
        wait_box(cell_id, [330, 60, 430, 150])
        _drag(page, (430, 150), (450, 170))  # its bottom-right handle: grown by 20 each way
        wait_box(cell_id, [330, 60, 450, 170])
        page.check("#mark-difficult")
        page.wait_for_selector("#cell-detail >> text=difficult: hard to make out")
        assert stored(cell_id).json()["difficult"] is True
        page.screenshot(path=str(screenshots / "e2e-9-box-edited.png"))

        page.click("#delete-cell")
        page.wait_for_selector(f"#slide-viewer[data-box-count='{found}']")
        page.wait_for_function(f"document.querySelectorAll('#cell-table tbody tr').length === {found}")
        assert stored(cell_id).status == 404

        # undone: Ctrl+Z brings the box back as it was, selected; the Delete key deletes the selected box
        # and "Undo delete" brings it back again
        page.wait_for_selector("#undo-delete:not([hidden])")
        page.keyboard.press("Control+z")
        page.wait_for_selector(f"#cell-table tr.selected[data-cell-id='{cell_id}']")
        page.wait_for_selector(f"#slide-viewer[data-box-count='{found + 1}']")
        back = stored(cell_id).json()
        assert back["difficult"] is True and all(abs(a - b) <= 3 for a, b in zip(back["box"], [330, 60, 450, 170]))
        page.wait_for_selector("#undo-delete[hidden]", state="attached")
        page.keyboard.press("Delete")
        page.wait_for_selector(f"#slide-viewer[data-box-count='{found}']")
        assert stored(cell_id).status == 404
        page.click("#undo-delete")
        page.wait_for_selector(f"#slide-viewer[data-box-count='{found + 1}']")
        assert stored(cell_id).status == 200
        history = page.request.get(f"{live_server.url}/api/slides/{slide.pk}/history/").json()["results"]
        mine = [(e["action"], e["actor"]) for e in history if e["cell"] == cell_id and e["action"] != "answer"]
        assert mine == [("create", "anno"), ("move", "anno"), ("move", "anno"), ("mark", "anno"), ("delete", "anno"),
                        ("restore", "anno"), ("delete", "anno"), ("restore", "anno")], mine
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


def test_a_hematologist_is_not_offered_to_draw_move_or_delete_boxes(analyzed_field, live_server, browser):
    slide, *_ = analyzed_field
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        page.locator("#cell-table tbody tr").first.click()
        page.wait_for_selector("#cell-detail dl")
        assert page.locator("#draw-box").count() == 0 and page.locator("#delete-cell").count() == 0
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


@pytest.fixture
def field_with_an_unsure_cell(analyzed_field):
    from webapp.cells.models import Cell

    slide, *_ = analyzed_field
    cell = Cell.objects.create(slide=slide, image=slide.images.get(), x0=4, y0=4, x1=70, y1=66, source="model",
                               predicted_class="monocyte", probabilities={"monocyte": 0.41, "neutrophil": 0.39},
                               confidence=0.41)
    return slide, cell


@pytest.fixture
def field_with_a_platelet(field_with_an_unsure_cell):
    """The field's analysed cell (unclassified), a neutrophil and a platelet."""
    from webapp.cells.models import Cell

    slide, cell = field_with_an_unsure_cell
    Cell.objects.filter(pk=cell.pk).update(predicted_class="neutrophil", confidence=0.9)
    Cell.objects.create(slide=slide, image=cell.image, x0=200, y0=10, x1=230, y1=40, source="model",
                        predicted_class="platelet", probabilities={"platelet": 0.95}, confidence=0.95)
    return slide


def test_a_platelet_is_counted_beside_the_white_cell_differential(field_with_a_platelet, live_server, browser):
    slide = field_with_a_platelet
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        table = page.locator("#differential-table")
        table.wait_for()
        white = table.locator("tfoot").inner_text().lower()
        assert "white cells" in white and "2" in white  # the neutrophil and the unclassified cell, not the platelet
        other = table.locator("tbody.not-white").inner_text().lower()
        assert "not white cells" in other and "platelet" in other and "50 / 100 white cells" in other
        assert "platelet" not in table.locator("tbody").first.inner_text().lower()
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


def test_a_cell_the_model_is_unsure_of_reads_unidentified_with_its_guess(field_with_an_unsure_cell, live_server, screenshots, browser):
    slide, cell = field_with_an_unsure_cell
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        row = page.locator(f"#cell-table tr[data-cell-id='{cell.pk}']")
        row.wait_for()
        assert "unidentified" in row.inner_text() and "model's guess: monocyte" in row.inner_text()
        assert "unidentified" in page.inner_text("#differential")
        row.click()
        assert "monocyte 41 %, too unsure to count" in page.inner_text("#cell-detail").replace("\u00a0", " ")
        page.screenshot(path=str(screenshots / "e2e-7-unidentified.png"))
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


def test_a_hematologist_reclassifies_a_cell_from_the_gallery_and_the_differential_follows(
        field_with_an_unsure_cell, live_server, screenshots, browser):
    """The gallery groups the cells by class; a cell picked there offers the classes to give it, in a fixed
    order, the chosen one marked, the cell moved to its new group and the count from "unidentified" to the
    class given, the change kept with who made it; none once signed off."""
    slide, cell = field_with_an_unsure_cell
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        thumb = f".gallery-cell[data-cell-id='{cell.pk}']"
        page.locator(f".gallery-group[data-class='unidentified'] {thumb}").click()
        assert "selected" in (page.locator(f"#cell-table tr[data-cell-id='{cell.pk}']").get_attribute("class") or "")
        choices = page.locator("#reclassify button.class-choice")
        choices.first.wait_for()
        assert choices.evaluate_all("bs => bs.map(b => b.dataset.class)") == ["neutrophil", "monocyte"]  # a differential's order
        page.click("#reclassify button[data-class='neutrophil']")
        page.wait_for_selector("#reclassify button[data-class='neutrophil'][aria-pressed='true']")
        detail = page.inner_text("#cell-detail")
        assert "Reviewed as" in detail and "by hema" in detail
        row = page.locator(f"#cell-table tr[data-cell-id='{cell.pk}']")
        assert "reviewed by hema" in row.inner_text() and "selected" in (row.get_attribute("class") or "")
        assert page.locator(f".gallery-group[data-class='neutrophil'] {thumb}.selected").count() == 1
        assert page.locator(f".gallery-group[data-class='unidentified'] {thumb}").count() == 0
        differential = page.inner_text("#differential-table")
        assert "unidentified" not in differential.lower() and "neutrophil" in differential.lower()
        stored = page.request.get(f"{live_server.url}/api/cells/{cell.pk}/").json()
        assert stored["reviewed_class"] == "neutrophil" and stored["reviewed_by"] == "hema"
        assert stored["predicted_class"] == "monocyte"  # the model's answer is kept beside it
        page.click("#cell-history summary")  # who changed the cell, and when
        page.wait_for_selector("#cell-history li >> text=hema classed it neutrophil (was monocyte)")
        assert page.locator("#cell-history li").count() == 1
        page.screenshot(path=str(screenshots / "e2e-8-reclassified.png"))

        # the keyboard: N picks the next cell nobody has reviewed (the analysis's), 1 gives it the first class
        page.keyboard.press("n")
        other = page.locator("#cell-table tr.selected")
        other.wait_for()
        other_id = int(other.get_attribute("data-cell-id"))
        assert other_id != cell.pk
        first = page.locator("#reclassify button.class-choice").first.get_attribute("data-class")
        page.keyboard.press("1")
        page.wait_for_selector(f"#reclassify button[data-class='{first}'][aria-pressed='true']")
        assert page.request.get(f"{live_server.url}/api/cells/{other_id}/").json()["reviewed_class"] == first
        page.keyboard.press("n")  # nothing left to review: the selection stays
        page.wait_for_timeout(200)
        assert page.locator("#cell-table tr.selected").get_attribute("data-cell-id") == str(other_id)

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#sign-off")
        page.wait_for_selector("text=signed off by hema")
        page.wait_for_selector("#cell-detail >> text=Click a box or a row")  # the results drawn again
        page.locator(f"#cell-table tr[data-cell-id='{cell.pk}']").click()
        page.wait_for_selector("#cell-detail img, #cell-detail .thumb")
        assert page.locator("#reclassify").count() == 0

        page.click("#report-link")  # the signed report, to print
        page.wait_for_selector("#report-differential")
        assert page.inner_text("#report-status").startswith("Signed off by hema on")
        report = page.inner_text("#report")
        assert "E2E-BOXES" in report and "2 of 2 cells" in report
        rows = page.locator("#report-differential tbody tr").all_inner_texts()
        assert sorted(r.split("\t")[0] for r in rows) == sorted({"neutrophil", first})
        page.emulate_media(media="print")
        assert not page.locator("#print-report").is_visible() and not page.locator(".topbar").is_visible()
        page.screenshot(path=str(screenshots / "e2e-11-report.png"))
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


@pytest.fixture
def scan_and_admin(analyzed_scan, make_user):
    """The analyzed scan, the folders its files and zoom tiles are kept in, and an admin to delete it."""
    from django.core.files.storage import default_storage

    make_user("admin", username="boss")
    image = analyzed_scan.images.get()
    kept = [Path(default_storage.path(image.file.name)), Path(default_storage.path(f"tiles/{analyzed_scan.uuid}"))]
    assert all(p.exists() for p in kept)
    return analyzed_scan, kept


def test_an_admin_deletes_a_slide_and_then_its_patient(scan_and_admin, live_server, screenshots, browser):
    slide, kept = scan_and_admin
    page, errors = _open_page(browser)  # a hematologist is not offered to delete
    try:
        _log_in(page, live_server, "hema")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        page.wait_for_selector("#slide-viewer[data-box-count='3']")
        page.wait_for_selector("#sign-off")
        assert page.locator("#delete-slide").count() == 0
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()
    page, errors = _open_page(browser)  # a new page is a new session
    try:
        _log_in(page, live_server, "boss")
        page.goto(f"{live_server.url}/#/slides/{slide.pk}")
        page.wait_for_selector("#slide-viewer[data-box-count='3']")
        messages: list[str] = []

        def accept(dialog) -> None:
            messages.append(dialog.message)
            dialog.accept()

        page.on("dialog", accept)
        page.click("#delete-slide")
        page.wait_for_selector("h1:has-text('Patient E2E-SCAN')")
        page.wait_for_selector("text=No slides yet.")
        assert page.url.endswith(f"#/patients/{slide.patient_id}")
        assert "its image, its cells and their history" in messages[0]
        assert not any(p.exists() for p in kept), "the scan's file and zoom tiles are deleted with it"
        page.screenshot(path=str(screenshots / "e2e-8-slide-deleted.png"))
        page.click("#delete-patient")
        page.wait_for_selector("text=No patients yet.")
        assert page.url.endswith("#/patients") and page.locator("text=E2E-SCAN").count() == 0
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


@pytest.fixture
def two_classifiers(make_user, hematologist):
    """An active classifier and a newer candidate, with figures as training records them; an admin."""
    from webapp.registry.services import model_version_register

    make_user("admin", username="boss")
    old = model_version_register(kind="classifier", architecture="cbam_cnn_small", version="cbam-old",
                                 metrics={"test": {"accuracy": 0.9437, "macro_f1": 0.9434, "ece": 0.019, "n": 960},
                                          "tecom_analyze": {"accuracy": 0.8167, "macro_f1": 0.5996}, "epochs_run": 61},
                                 activate=True)
    new = model_version_register(kind="classifier", architecture="resnet18", version="resnet-new",
                                 metrics={"test": {"accuracy": 0.982, "macro_f1": 0.981, "ece": 0.012, "n": 960}})
    return old, new


def test_an_admin_compares_classifiers_makes_one_active_and_rolls_back(two_classifiers, live_server, screenshots, browser):
    old, new = two_classifiers
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "hema")  # a hematologist reads the figures, and is offered no change
        page.goto(f"{live_server.url}/#/models")
        page.wait_for_selector("#models-classifier table.models")
        assert page.locator("[data-promote]").count() == 0
        page.click("text=Log out")
        page.wait_for_selector("#username")
        _log_in(page, live_server, "boss")
        page.goto(f"{live_server.url}/#/models")
        table = page.locator("#models-classifier table.models")
        table.wait_for()
        heads = table.locator("thead th[data-version-id]").evaluate_all("ths => ths.map(th => th.dataset.versionId)")
        assert heads == [str(old.pk), str(new.pk)]  # the active one first
        accuracy = table.locator("tr", has_text="Held-out test accuracy").inner_text()
        assert "0.944" in accuracy and "0.982" in accuracy
        other_lab = table.locator("tr", has_text="Another lab, as analyses answer: macro-F1").inner_text()
        assert "0.600" in other_lab and "–" in other_lab
        page.screenshot(path=str(screenshots / "e2e-10-models.png"))

        # a weekly retraining: a periodic task of django-celery-beat at the admin's time of day, in the browser's zone
        assert page.inner_text("#schedule-now") == "Not retrained on a schedule"
        assert not page.locator("#schedule-time").is_visible()
        page.select_option("#schedule-every", "week")
        page.select_option("#schedule-day", "2")
        page.fill("#schedule-time", "03:15")
        page.click("#schedule-save")
        page.wait_for_selector("#schedule-now:text('Every Tuesday at 03:15')")
        kept = page.request.get(f"{live_server.url}/api/model-versions/retrain/schedule/").json()
        zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
        assert (kept["every"], kept["day_of_week"], kept["time"], kept["timezone"]) == ("week", 2, "03:15", zone)
        assert f"({zone})" in page.inner_text("#schedule-now")

        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f"[data-promote='{new.pk}']")
        page.wait_for_selector(f"[data-promote='{old.pk}']:text('Roll back to this')")
        versions = {v["version"]: v["status"] for v in page.request.get(f"{live_server.url}/api/model-versions/?kind=classifier").json()["results"]}
        assert versions == {"resnet-new": "active", "cbam-old": "retired"}
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f"[data-promote='{old.pk}']")
        page.wait_for_selector(f"[data-promote='{new.pk}']:text('Roll back to this')")
        versions = {v["version"]: v["status"] for v in page.request.get(f"{live_server.url}/api/model-versions/?kind=classifier").json()["results"]}
        assert versions == {"resnet-new": "retired", "cbam-old": "active"}
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()


@pytest.fixture
def retraining_settings(settings, cell_folder, tmp_path, monkeypatch):
    """The small generated training set and a short budget, here and for a Celery worker started after."""
    for name, value in {"LEUKOLAB_TRAIN_DATA": str(cell_folder), "LEUKOLAB_RETRAIN_BUDGET_S": "12",
                        "LEUKOLAB_MODEL_DIR": str(tmp_path / "models")}.items():
        monkeypatch.setenv(name, value)
    settings.LEUKOLAB_TRAIN_DATA = str(cell_folder)
    settings.LEUKOLAB_RETRAIN_BUDGET_S = 12
    settings.LEUKOLAB_MODEL_DIR = tmp_path / "models"


def test_an_admin_retrains_the_classifier_and_finds_the_candidate_beside_the_others(
        two_classifiers, retraining_settings, live_server, job_runner, screenshots, browser):
    page, errors = _open_page(browser)
    try:
        _log_in(page, live_server, "boss")
        page.goto(f"{live_server.url}/#/models")
        page.wait_for_selector("#models-classifier table.models")
        assert page.locator("#detector-training #train-detector").is_visible()  # the detector has a card of its own
        page.click("#retrain")
        page.wait_for_selector("#retraining .progress")  # queued, then training, with its progress
        page.wait_for_selector("#retrain-result", timeout=ANALYSIS_TIMEOUT_MS)
        assert "newest candidate below" in page.inner_text("#retrain-result")
        page.wait_for_function("document.querySelectorAll('#models-classifier th[data-version-id]').length === 3")
        learned = page.locator("#models-classifier tr", has_text="Cells people classed, trained on").inner_text()
        assert learned.split("\t")[1:] == ["–", "0", "–"]  # the active one, the new candidate (nothing reviewed), the other
        # the candidate's plots, in its column: the others were registered without any
        confusion = page.locator("#models-classifier tr[data-figure='confusion'] td")
        assert confusion.first.inner_text() == "Confusion matrix, held-out cells" and confusion.locator("img").count() == 1
        page.wait_for_function("[...document.querySelectorAll('#models-classifier img.model-figure')].every(i => i.complete && i.naturalWidth > 300)")
        assert page.locator("#models-classifier tr[data-figure] img").count() == 4  # confusion, curves, reliability, robustness
        page.screenshot(path=str(screenshots / "e2e-12-retrained.png"))
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        page.close()
        _wait_idle_jobs()
