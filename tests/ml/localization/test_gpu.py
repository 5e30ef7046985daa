"""The deep detector on a GPU (mixed precision, channels-last, augmentation processes): trained
there, the same boxes on either device. Skipped on machines without a GPU."""
import pytest
import torch

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@gpu
def test_the_deep_detector_trains_on_the_gpu_and_finds_the_same_boxes_on_cpu_and_gpu(smear_samples, tmp_path):
    from ml.imageio import load_image
    from ml.localization import load_localizer
    from ml.localization.train import TrainConfig, train_detector

    fit, val = smear_samples[:8], smear_samples[8:10]
    cfg = TrainConfig(width=32, img_size=160, scale=0.4, batch_size=4, max_steps=60, val_every=100, lr=4e-3,
                      device="cuda", workers=2)
    summary = train_detector(fit, val, tmp_path / "run", cfg, progress=False)
    assert summary["device"].startswith("cuda") and summary["mixed_precision"] is True
    assert summary["final_loss"] < 0.7 * summary["first_loss"]
    img = load_image(val[0].image_path)
    on_gpu = load_localizer(tmp_path / "run", device="cuda").detect(img, min_score=0.1, labels=None)
    on_cpu = load_localizer(tmp_path / "run", device="cpu").detect(img, min_score=0.1, labels=None)
    assert len(on_gpu) == len(on_cpu)
    for g, c in zip(sorted(on_gpu, key=lambda b: -b.score), sorted(on_cpu, key=lambda b: -b.score)):
        assert g.label == c.label and g.iou(c) > 0.99 and abs(g.score - c.score) < 1e-3
