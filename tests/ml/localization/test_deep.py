import json

import numpy as np
import pytest
import torch

from ml.boxes import Box
from ml.imageio import load_image
from ml.localization import load_localizer
from ml.localization.__main__ import main
from ml.localization.deep import CenterNet, centernet_loss, decode, encode_targets, forward_views
from ml.localization.train import TrainConfig, train_detector


@pytest.mark.parametrize("backbone", ["tiny", "small", "timm:resnet18"])
def test_every_backbone_runs_forward_and_backward_on_a_tiny_input(backbone):
    model = CenterNet(backbone, num_classes=3, width=32)
    hm, reg = model(torch.randn(2, 3, 64, 96))
    assert hm.shape == (2, 3, 8, 12) and reg.shape == (2, 4, 8, 12)
    (hm.mean() + reg.mean()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: small, tiny"):
        CenterNet("nope", num_classes=1)


def test_targets_decode_back_to_the_boxes():
    boxes = np.array([[40, 56, 120, 150], [200, 10, 230, 42]], np.float32)
    hm, reg, wt = encode_targets(boxes, np.array([0, 1]), 2, 32, 32)
    logits = torch.from_numpy(np.log(np.clip(hm, 1e-6, 1 - 1e-6) / (1 - np.clip(hm, 1e-6, 1 - 1e-6))))[None]
    out = decode(logits, torch.from_numpy(reg)[None], scale=0.5, classes=["WBC", "RBC"], min_score=0.5)[0]
    assert sorted(b.label for b in out) == ["RBC", "WBC"]
    for b in out:
        truth = Box(*(boxes[0 if b.label == "WBC" else 1] / 0.5))
        assert b.iou(truth) > 0.98


class _Oracle(torch.nn.Module):
    """Answers the exact targets of its boxes for the input and for each mirrored copy of it."""

    def __init__(self, x: torch.Tensor, boxes: np.ndarray, classes: np.ndarray):
        super().__init__()
        self.x, self.boxes, self.classes = x, boxes, classes
        self.calls = 0

    def forward(self, inp):
        self.calls += 1
        h, w = inp.shape[-2:]
        b = self.boxes.copy()
        flips = next(d for d in [(), (3,), (2,), (2, 3)] if torch.equal(inp, self.x.flip(d) if d else self.x))
        if 3 in flips:
            b[:, [0, 2]] = w - b[:, [2, 0]]
        if 2 in flips:
            b[:, [1, 3]] = h - b[:, [3, 1]]
        hm, reg, _ = encode_targets(b, self.classes, 2, h // 8, w // 8)
        hm = np.clip(hm, 1e-6, 1 - 1e-6)
        return torch.from_numpy(np.log(hm / (1 - hm)))[None], torch.from_numpy(reg)[None]


@pytest.mark.parametrize("views", [1, 2, 4])
def test_mirrored_views_are_mirrored_back_onto_the_same_boxes(views):
    boxes = np.array([[41, 57, 123, 149], [203, 13, 229, 45], [150, 180, 250, 250]], np.float32)
    x = torch.randn(1, 3, 256, 320)
    model = _Oracle(x, boxes, np.array([0, 1, 0]))
    hm, reg = forward_views(model, x, views)
    assert model.calls == views
    out = decode(hm, reg, scale=1.0, classes=["WBC", "RBC"], min_score=0.5)[0]
    assert len(out) == 3
    for b in out:
        assert max(b.iou(Box(*t)) for t in boxes) > 0.98
    with pytest.raises(ValueError, match="views must be one of"):
        forward_views(model, x, 3)


def test_short_training_on_real_fields_lowers_the_loss_and_yields_a_working_run(smear_samples, tmp_path):
    torch.manual_seed(0)
    fit, val = smear_samples[:8], smear_samples[8:10]
    # one thread: fast even when other jobs share the cores; the narrower scale range of earlier versions,
    # over which 30 steps on 8 fields lower the loss clearly (the default's wider one needs more steps)
    cfg = TrainConfig(width=32, img_size=160, scale=0.4, batch_size=4, max_steps=30, val_every=100, lr=4e-3,
                      num_threads=1, scale_jitter=(0.7, 1.4))
    summary = train_detector(fit, val, tmp_path / "run", cfg, progress=False)
    assert summary["final_loss"] < 0.7 * summary["first_loss"]
    for name in ("config.json", "model.pt", "history.json", "loss.png"):
        assert (tmp_path / "run" / name).exists()
    loc = load_localizer(tmp_path / "run")
    assert loc.method == "deep" and loc.views == 4  # mirrored views kept in the checkpoint
    assert load_localizer(tmp_path / "run", views=1).views == 1
    img = load_image(val[0].image_path)
    seen = []
    boxes = loc.detect(img, progress=seen.append, min_score=0.0, labels=None)
    assert seen[-1] == pytest.approx(1.0)
    assert {b.label for b in loc.detect(img, min_score=0.0)} <= {"WBC"}  # what ml.analyze classifies
    h, w = img.shape[:2]
    for b in boxes:
        assert isinstance(b, Box) and b.label in ("WBC", "RBC", "Platelets")
        assert 0.0 <= b.score <= 1.0
        assert 0 <= b.x0 <= b.x1 <= w and 0 <= b.y0 <= b.y1 <= h
    # another magnification: the same run works at twice its scale, and "auto" answers in image pixels
    assert load_localizer(tmp_path / "run", rescale=2.0).scale == pytest.approx(2 * loc.scale)
    for b in loc.detect(img, min_score=0.0, rescale="auto"):
        assert 0 <= b.x0 <= b.x1 <= w and 0 <= b.y0 <= b.y1 <= h


def test_predict_prints_boxes_as_json(smear_samples, tmp_path, capsys):
    cfg = TrainConfig(width=16, img_size=128, batch_size=2, max_steps=2, val_every=100, num_threads=1)
    train_detector(smear_samples[:2], [], tmp_path / "run", cfg, progress=False)
    image = str(smear_samples[0].image_path)
    assert main(["predict", "--method", "deep", "--checkpoint", str(tmp_path / "run"), image, "--min-score", "0"]) == 0
    (out,) = json.loads(capsys.readouterr().out)["images"]
    assert out["image"] == image and out["method"] == "deep"
    assert all(len(b["box"]) == 4 and b["label"] in ("WBC", "RBC", "Platelets") for b in out["boxes"])


def test_deep_without_a_checkpoint_is_a_clear_error(capsys, smear_samples):
    assert main(["predict", "--method", "deep", str(smear_samples[0].image_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["predict", "--method", "deep", "--checkpoint", "/nonexistent/run", "x.jpg"]) == 2
    capsys.readouterr()
    assert main(["predict", "--views", "2", str(smear_samples[0].image_path)]) == 2  # classical
    assert "takes no views" in capsys.readouterr().err


def test_train_default_respects_a_time_budget(smear_samples, tmp_path):
    from ml.localization import train_default

    root = smear_samples[0].image_path.parent.parent
    seen = []
    run = train_default(root, tmp_path / "default", time_budget_s=3.0, epochs=50, num_threads=1,
                        progress=lambda f, msg="": seen.append(f))
    loc = load_localizer(run)
    assert loc.architecture == "centernet-tiny" and "train_seconds" in loc.metrics
    assert loc.metrics["train_seconds"] < 30
    assert seen and seen[-1] == pytest.approx(1.0)


def test_augmentation_threads_give_the_same_batches_whatever_their_number(smear_samples):
    """On a GPU the detector's batches are prepared by threads; each batch has its own generator,
    so one thread or three give the same batches, and two epochs differ."""
    from ml.localization.train import BoxDataset, ThreadedBatches

    cfg = TrainConfig(img_size=128, batch_size=2)
    ds = BoxDataset(smear_samples[:5], cfg)
    one, three = ThreadedBatches(ds, 2, 0, 1, True), ThreadedBatches(ds, 2, 0, 3, True)
    a, b = list(one), list(three)
    assert len(a) == len(b) == len(one) == 2
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert torch.equal(u, v)
    assert not torch.equal(list(one)[0][0], a[0][0])  # the next epoch draws anew
