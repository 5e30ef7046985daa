"""The demo slides a newcomer sees first show whole white cells."""
from ml.boxes import Box
from ml.localization.formats import Annotation, write_voc
from webapp.slides.management.commands.seed_demo import _whole_cell_fields


def _field(root, name, boxes):
    (root / "JPEGImages" / f"{name}.jpg").write_bytes(b"not read")
    write_voc(Annotation(f"{name}.jpg", 640, 480, boxes), root / "Annotations" / f"{name}.xml")


def test_demo_fields_skip_cells_cut_by_the_edge_and_fields_without_one(tmp_path):
    for d in ("JPEGImages", "Annotations"):
        (tmp_path / d).mkdir()
    _field(tmp_path, "a", [Box(100, 0, 250, 140, label="WBC")])  # cut by the top edge
    _field(tmp_path, "b", [Box(300, 200, 420, 320, label="RBC")])  # no white cell
    _field(tmp_path, "c", [Box(200, 150, 330, 280, label="WBC")])
    _field(tmp_path, "d", [Box(20, 20, 150, 150, label="WBC"), Box(500, 300, 639, 470, label="WBC")])
    _field(tmp_path, "e", [Box(400, 100, 520, 230, label="WBC")])
    (tmp_path / "JPEGImages" / "f.jpg").write_bytes(b"no annotation")

    assert [p.name for p in _whole_cell_fields(tmp_path / "JPEGImages", 2)] == ["c.jpg", "e.jpg"]
    # too few whole cells: topped up with the other fields in order
    assert [p.name for p in _whole_cell_fields(tmp_path / "JPEGImages", 4)] == ["c.jpg", "e.jpg", "a.jpg", "b.jpg"]
