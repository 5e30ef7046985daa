"""Cells the model is unsure of are shown and counted as unidentified until a person classes them."""
import pytest

from webapp.cells.models import Cell
from webapp.cells.services import cell_reclassify


@pytest.fixture
def unsure_slide(active_classifier, analyzed_slide):
    """The analyzed slide with one of its cells answered at 40 % and one at 90 %."""
    cells = list(analyzed_slide.cells.order_by("pk"))
    first = cells[0]
    Cell.objects.filter(pk=first.pk).update(confidence=0.4)
    Cell.objects.filter(pk__in=[c.pk for c in cells[1:]]).update(confidence=0.9)
    # a second, sure, cell of another class beside it
    Cell.objects.create(slide=analyzed_slide, image=first.image, x0=1, y0=1, x1=40, y1=40, source="model",
                        predicted_class="neutrophil", probabilities={"neutrophil": 0.9}, confidence=0.9)
    return analyzed_slide, first


def test_an_unsure_answer_is_shown_and_counted_as_unidentified(api_as, unsure_slide, settings, make_user):
    slide, unsure = unsure_slide
    settings.LEUKOLAB_UNIDENTIFIED_BELOW = 0.5
    client = api_as("hematologist", username="h1")
    cells = {c["id"]: c for c in client.get(f"/api/slides/{slide.pk}/cells/").json()}
    assert cells[unsure.pk]["class"] == "unidentified" and cells[unsure.pk]["unidentified"] is True
    assert cells[unsure.pk]["predicted_class"] == unsure.predicted_class  # the guess is still there to see
    assert sum(c["unidentified"] for c in cells.values()) == 1
    rows = {r["class"]: r["count"] for r in client.get(f"/api/slides/{slide.pk}/differential/").json()["rows"]}
    assert rows["unidentified"] == 1 and sum(rows.values()) == len(cells)
    # only the sure answers go out as training labels
    r = client.get(f"/api/exports/cells/?slide={slide.pk}&which=all")
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content))).namelist()
    assert not any(f"_cell{unsure.pk}." in n for n in names) and len(names) == len(cells) - 1 + 1  # + boxes.csv
    r = client.get(f"/api/exports/boxes/?format=voc&classes=1&slide={slide.pk}")
    assert r.status_code == 400 and "unsure" in r.json()["message"]

    cell_reclassify(cell=unsure, label="monocyte", user=make_user("hematologist", username="h2"))
    assert client.get(f"/api/cells/{unsure.pk}/").json()["class"] == "monocyte"
    rows = {r["class"] for r in client.get(f"/api/slides/{slide.pk}/differential/").json()["rows"]}
    assert "unidentified" not in rows


def test_the_threshold_is_a_setting_and_can_be_off(api_as, unsure_slide, settings):
    slide, unsure = unsure_slide
    client = api_as("hematologist", username="h1")
    settings.LEUKOLAB_UNIDENTIFIED_BELOW = None
    assert client.get(f"/api/cells/{unsure.pk}/").json()["class"] == unsure.predicted_class
    settings.LEUKOLAB_UNIDENTIFIED_BELOW = 0.95
    rows = {r["class"]: r["count"] for r in client.get(f"/api/slides/{slide.pk}/differential/").json()["rows"]}
    assert rows == {"unidentified": Cell.objects.filter(slide=slide).count()}


@pytest.mark.parametrize("value, expected", [("off", None), ("0.6", 0.6), ("0", 0.0)])
def test_the_setting_reads_a_fraction_or_off(monkeypatch, value, expected):
    from webapp.config.env import env_fraction

    monkeypatch.setenv("LEUKOLAB_UNIDENTIFIED_BELOW", value)
    assert env_fraction("LEUKOLAB_UNIDENTIFIED_BELOW", "0.5") == expected


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_setting_out_of_range_names_itself(monkeypatch, value):
    from webapp.config.env import env_fraction

    monkeypatch.setenv("LEUKOLAB_UNIDENTIFIED_BELOW", value)
    with pytest.raises(ValueError, match="LEUKOLAB_UNIDENTIFIED_BELOW must be a number between 0 and 1"):
        env_fraction("LEUKOLAB_UNIDENTIFIED_BELOW", "0.5")
