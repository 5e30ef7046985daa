"""Make sure an active localizer and (data permitting) an active classifier exist."""
from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.registry.models import ModelVersion
from webapp.registry.selectors import model_version_active, run_figures
from webapp.registry.services import classifier_register_run, model_version_ensure_classical, model_version_scores_add


class Command(BaseCommand):
    help = "Register the classical localizer and, when no classifier is active, train and register a default one."

    def add_arguments(self, parser):
        parser.add_argument("--budget-s", type=float, default=480.0, help="training time budget for the default classifier")
        parser.add_argument("--data", help="class-per-folder training images (default: LEUKOLAB_TRAIN_DATA or the PBC dataset)")
        parser.add_argument("--skip-classifier", action="store_true")

    def handle(self, *args, budget_s: float, data: str | None, skip_classifier: bool, **options):
        localizer = model_version_ensure_classical()
        self.stdout.write(f"localizer: {localizer.architecture} {localizer.version} (active)")
        if localizer.architecture == "classical" and not localizer.metrics:
            self._score_classical(localizer)
        active = model_version_active(kind=ModelVersion.Kind.CLASSIFIER)
        if active is not None:
            self.stdout.write(f"classifier: {active.architecture} {active.version} (active)")
            return
        if skip_classifier:
            self.stdout.write("classifier: none active (skipped)")
            return
        from ml.classification import train_default

        data_dir = Path(data or settings.LEUKOLAB_TRAIN_DATA or settings.LEUKOLAB_DATASETS / "pbc")
        if not data_dir.is_dir():
            self.stdout.write(f"no training data at {data_dir}: the default classifier learns from generated cells")
            data_dir = None
        out = settings.LEUKOLAB_MODEL_DIR / f"default-classifier-{time.strftime('%Y%m%d-%H%M%S')}"
        self.stdout.write(f"training the default classifier into {out} (budget {budget_s:.0f} s) ...")
        started = time.monotonic()
        run = Path(train_default(data_dir, out, time_budget_s=budget_s, progress=self._progress))
        try:
            mv = classifier_register_run(run=run, activate=True,
                                         parameters={"trained_by": "ensure_models", "data": str(data_dir or "generated")})
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"\nclassifier: {mv.architecture} {mv.version} registered and active ({time.monotonic() - started:.0f} s)")

    def _score_classical(self, localizer: ModelVersion) -> None:
        """The classical localizer scored on the annotated fields of BCCD's test part, where they are at hand
        (seconds), with its plots: what the Models page shows of it beside a trained detector."""
        import tempfile

        from ml.localization import load_localizer
        from ml.localization.data import bccd_root, load_split
        from ml.localization.report import score_localizer

        root = bccd_root()
        if not root.is_dir():
            return
        samples = load_split(root, "test")
        if not samples:
            return
        with tempfile.TemporaryDirectory() as tmp:
            metrics = score_localizer(load_localizer("classical"), samples, tmp,  # named as a detector's training names it
                                      scored_on=f"{root.name} test ({len(samples)} fields)")
            model_version_scores_add(model_version=localizer, metrics=metrics,
                                     figures=run_figures(kind=ModelVersion.Kind.LOCALIZER, run=Path(tmp)))
        self.stdout.write(f"localizer: scored on {metrics['split']}: mean IoU {metrics['mean_iou']:.3f}, "
                          f"AP50 {metrics['ap50']:.3f}")

    def _progress(self, fraction: float, message: str = "") -> None:
        bar = "#" * int(30 * fraction)
        self.stdout.write(f"\r  [{bar:<30s}] {100 * fraction:5.1f}% {message[:60]:<60s}", ending="")
        self.stdout.flush()
