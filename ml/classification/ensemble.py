"""Several trained classifiers answering as one (a deep ensemble, Lakshminarayanan et al. 2017).

Networks trained from different random starts make different mistakes, most of all on images
unlike their training data (Ovadia et al. 2019): the mean of their probabilities is more accurate
and better calibrated than the typical member. An ensemble is saved as an ordinary classifier
checkpoint (architecture ``ensemble``) whose network holds the members and answers the log of the
mean of their calibrated probabilities, so everything that serves one classifier (``ml.analyze``,
the worker, evaluation, heatmaps, the slide's own statistics) serves an ensemble unchanged, at the
members' summed cost.

    python -m ml.classification ensemble runs/a runs/b runs/c --out runs/abc [--data DIR]

``--data``: the members' training data; the ensemble's temperature is fitted on the validation
part of the benchmark's fixed split and its held-out test scores are recorded. The members must
share that split (the default) or the validation cells would include training cells of a member.
Members that answer with a nucleus-shape opinion (``morphometry.py``) lend their networks alone, at
their networks' temperatures; with ``--data`` the ensemble gets an opinion of its own, fitted as the
``shape-opinion`` command fits one.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ml.classification.registry import create_classifier, register_classifier


@register_classifier("ensemble")
class Ensemble(nn.Module):
    """``members``: ``[{"architecture", "model_kwargs", "temperature"}, ...]``, as
    :func:`build_ensemble` records them. The output is ``log(mean_i softmax(logits_i / T_i))``."""

    def __init__(self, num_classes: int, members: list[dict] | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble is made of trained classifiers: "
                             "python -m ml.classification ensemble RUN RUN ... --out DIR")
        self.nets = nn.ModuleList(
            create_classifier(m["architecture"], num_classes, **m.get("model_kwargs", {})) for m in members)
        self.register_buffer("temperatures", torch.tensor([float(m["temperature"]) for m in members]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(net(x).float() / t, dim=1) for net, t in zip(self.nets, self.temperatures)])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.nets))


SHARED = ("classes", "crop", "mean", "std", "stain_norm", "trained_prior", "tta")


def build_ensemble(runs: list[Path], out_dir: Path, data: Path | None = None, progress=None) -> Path:
    """Write ``out_dir/best.pt``: the classifiers of ``runs`` (run directories or checkpoints) as one.

    They must agree on what inference needs (:data:`SHARED`: classes, crop rule, normalization,
    stain normalization, trained prior, test-time views); otherwise a ``ValueError`` names the
    first difference. With ``data`` (the members' class-per-folder training data), the ensemble's
    temperature is fitted on the fixed split's validation cells and its test scores recorded."""
    from ml.classification.artifact import _resolve, save_checkpoint
    from ml.classification.crop import crop_rule_from_dict

    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two classifiers")
    paths = [_resolve(Path(r)) for r in runs]
    ckpts = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    for p, c in zip(paths, ckpts):
        if c.get("architecture") == "ensemble":
            raise ValueError(f"{p}: an ensemble cannot be a member; list its members instead")
    first = ckpts[0]
    for p, c in zip(paths[1:], ckpts[1:]):
        for key in SHARED:
            if c.get(key) != first.get(key):
                raise ValueError(f"{p} differs from {paths[0]} in {key}: {c.get(key)!r} vs {first.get(key)!r}")
    # a member's network at its own temperature; its nucleus-shape opinion, if any, is not averaged
    members = [{"architecture": c["architecture"], "model_kwargs": c.get("model_kwargs", {}),
                "temperature": _network_temperature(c), "version": c["version"], "path": str(p)}
               for p, c in zip(paths, ckpts)]
    opinions = any(c.get("shape_opinion") for c in ckpts)
    classes = list(first["classes"])
    model = Ensemble(len(classes), members)
    for net, c in zip(model.nets, ckpts):
        net.load_state_dict(c["state_dict"])
    model.eval()
    crop = crop_rule_from_dict(first["crop"])
    args = dict(architecture="ensemble", model_kwargs={"members": [{k: m[k] for k in ("architecture", "model_kwargs",
                                                                                       "temperature")}
                                                                  for m in members]},
                classes=classes, crop=crop, stain_norm=first.get("stain_norm", "none"), mean=first["mean"],
                std=first["std"], trained_prior=first.get("trained_prior"), tta=int(first.get("tta", 1)))
    seeds = {int((c.get("metrics") or {}).get("split_seed", 0)) for c in ckpts}
    if len(seeds) > 1:  # one member's test cells would be another's training cells
        raise ValueError(f"the members were trained on different splits (split seeds {sorted(seeds)})")
    metrics = {"members": [{k: m[k] for k in ("version", "path", "architecture")} |
                           {"test": (c.get("metrics") or {}).get("test")} for m, c in zip(members, ckpts)],
               "split_seed": seeds.pop()}
    out = Path(out_dir) / "best.pt"
    temperature = 1.0
    if data is not None:
        temperature, scores = _fit_on_split(out, model, args, Path(data), progress, metrics["split_seed"])
        metrics.update(scores)
    elif opinions:
        metrics["shape_opinion"] = ("the members' nucleus-shape opinions are left out; give the ensemble its own "
                                    "with --data (or python -m ml.classification shape-opinion)")
    save_checkpoint(out, model, **args, temperature=temperature, metrics=metrics)
    if data is not None and opinions:  # the members answered with one: so does the ensemble, fitted anew
        from ml.classification.morphometry import add_shape_opinion

        add_shape_opinion(out, Path(data), Path(out_dir), progress=progress)
    return Path(out_dir)


def _network_temperature(ckpt: dict) -> float:
    """The temperature of a checkpoint's network alone (with a shape opinion, the one it was fused at)."""
    opinion = ckpt.get("shape_opinion")
    return float(opinion["network_temperature"] if opinion else ckpt.get("temperature", 1.0))


def _fit_on_split(out: Path, model: nn.Module, args: dict, data: Path, progress,
                  split_seed: int = 0) -> tuple[float, dict]:
    from ml.classification.artifact import load_classifier, save_checkpoint
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import evaluate_cells, labelled_crops
    from ml.classification.metrics import classification_report, ece, fit_temperature, softmax

    rule = args["crop"]
    cells = load_folder(data, size=cache_size_for(rule.out_size, rule.margin), progress=progress)
    _, va, te = fixed_split(cells.names, cells.labels, seed=split_seed)
    save_checkpoint(out, model, **args, temperature=1.0, metrics={"split_seed": split_seed})  # to score it through the serving path
    clf = load_classifier(out)
    crops, y = labelled_crops(clf, cells.subset(va))
    logits = clf.logits_of_crops(crops)
    t = fit_temperature(logits, y)
    vr = classification_report(y, logits.argmax(1), clf.classes)
    clf.temperature = t
    test = evaluate_cells(clf, cells.subset(te))
    scores = {"temperature": t, "val_accuracy": vr["accuracy"], "val_macro_f1": vr["macro_f1"],
              "val_ece_raw": ece(softmax(logits), y), "val_ece": ece(softmax(logits, t), y),
              "test": {k: test[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1", "ece")}}
    return t, scores
