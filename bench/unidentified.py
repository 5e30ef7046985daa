"""How many cells a confidence threshold sends to "unidentified" (``LEUKOLAB_UNIDENTIFIED_BELOW``), and
the accuracy on the rest: PBC's held-out test split (balanced, 8 classes) and tecom's 300 cells (another
lab, any of the model's classes, through the classical localizer and the slide's normalization statistics,
as the product answers), both under the served prior ("blood").

    python bench/unidentified.py runs/default
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ml.classification import load_classifier
from ml.classification.data import datasets_root, fixed_split, load_folder
from ml.classification.evaluate import evaluate_cells, evaluate_tecom

run = Path(sys.argv[1])
clf = load_classifier(run, prior="blood")
cells = load_folder(datasets_root() / "pbc")
_, _, test = fixed_split(cells.names, cells.labels)
test_cells = cells.subset(test)
for t in (0.4, 0.5, 0.6, 0.7):
    p = evaluate_cells(clf, test_cells, threshold=t)
    q = evaluate_tecom(clf, datasets_root() / "tecom", restrict=False, boxes="localizer",
                       threshold=t, norm=1000, norm_balanced=True)
    print(f"threshold {t}: PBC test acc {p['accuracy']:.3f} unidentified {p['unidentified_rate']:.3f} acc on rest {p['accuracy_identified']:.3f} | "
          f"tecom (any class) acc {q['accuracy']:.3f} unidentified {q['unidentified_rate']:.3f} acc on rest {q['accuracy_identified']:.3f}", flush=True)
