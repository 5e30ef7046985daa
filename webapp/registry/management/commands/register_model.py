"""Register a trained localizer or classifier run as a model version (and make it active if asked)."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from webapp.registry.models import ModelVersion
from webapp.registry.selectors import run_checkpoint, run_figures
from webapp.registry.services import model_version_register


class Command(BaseCommand):
    help = "Register a trained run (python -m ml.localization train / python -m ml.classification train)."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=[k.value for k in ModelVersion.Kind])
        parser.add_argument("run", type=Path, help="the run directory or its checkpoint file")
        parser.add_argument("--activate", action="store_true", help="make it the active version of its kind")

    def handle(self, *args, kind: str, run: Path, activate: bool, **options):
        if not run.exists():
            raise CommandError(f"{run} does not exist")
        try:
            checkpoint = run_checkpoint(kind=kind, run=run)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        try:
            if kind == ModelVersion.Kind.LOCALIZER:
                from ml.localization import load_localizer

                model = load_localizer(str(checkpoint))
                classes = ["WBC"]
            else:
                from ml.classification import load_classifier

                model = load_classifier(checkpoint)
                classes = list(model.classes)
        except Exception as exc:  # noqa: BLE001 - any unreadable artifact is the user's to fix
            raise CommandError(f"{checkpoint} is not a {kind} this version can read: {exc}") from exc
        measured = {}
        if kind == ModelVersion.Kind.LOCALIZER:  # the validation scores `ml.localization train` wrote beside it
            from ml.localization.deep import read_run_metrics

            try:
                measured = read_run_metrics(checkpoint.parent)
            except ValueError as exc:
                self.stderr.write(f"{checkpoint.parent / 'metrics.json'} cannot be read ({exc}): registered without its scores")
        version = str(getattr(model, "version", "") or checkpoint.parent.name)
        if ModelVersion.objects.filter(kind=kind, version=version).exists():
            raise CommandError(f"a {kind} with version {version!r} is already registered")
        mv = model_version_register(
            kind=kind,
            architecture=str(getattr(model, "architecture", "") or kind),
            version=version,
            artifact_path=checkpoint,
            parameters={"classes": classes, "source": str(run)},
            metrics={**(getattr(model, "metrics", {}) or {}), **measured},
            figures=run_figures(kind=kind, run=run),
            activate=activate,
        )
        self.stdout.write(f"registered {mv.kind} {mv.architecture} {mv.version} ({mv.status})")
