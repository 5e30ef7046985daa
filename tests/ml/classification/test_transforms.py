import numpy as np
import torch

from ml.classification.stain import normalize
from ml.classification.transforms import AugmentConfig, amplitude_mix, photometric, random_convolution, to_tensor


def test_photometric_augmentation_changes_colours_but_keeps_shape():
    rng = np.random.default_rng(0)
    crop = np.random.default_rng(1).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    outs = [photometric(crop, rng, AugmentConfig()) for _ in range(5)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    assert any(np.abs(o.astype(int) - crop).mean() > 5 for o in outs)
    assert (photometric(crop, rng, AugmentConfig(strength=0)) == crop).all()


def test_reinhard_maps_two_stains_of_one_cell_closer_together():
    import cv2

    cell = np.full((40, 40, 3), 220, np.uint8)
    cv2.circle(cell, (20, 20), 10, (120, 60, 160), -1)
    shifted = np.clip(cell.astype(int) * [0.8, 1.0, 0.7] + [30, 10, 0], 0, 255).astype(np.uint8)
    before = np.abs(cell.astype(int) - shifted).mean()
    after = np.abs(normalize(cell, "reinhard").astype(int) - normalize(shifted, "reinhard")).mean()
    assert after < before / 2
    assert normalize(cell, "macenko").shape == cell.shape


def test_gains_are_applied_as_multiplying_every_pixel_would():
    from ml.colour import apply_gains

    rng = np.random.default_rng(3)
    for _ in range(50):
        image = rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3), dtype=np.uint8)
        for gains in (rng.uniform(0.4, 2.5, 3).astype(np.float32), rng.uniform(0.4, 2.5, 3)):
            by_pixel = np.clip(image.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(apply_gains(image, gains), by_pixel)
    strided = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)[::2, ::3]  # a view, not contiguous
    gains = np.array([1.3, 0.9, 2.0], np.float32)
    np.testing.assert_array_equal(apply_gains(strided, gains),
                                  np.clip(strided.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8))


def test_background_normalization_removes_a_colour_cast_and_keeps_the_cell():
    """A field under a yellow lamp and the same field under a neutral one look alike after the
    'background' normalization (white balance on the crop's brightest pixels)."""
    from ml.classification.stain import METHODS, normalize
    from ml.colour import background_gains

    assert "background" in METHODS
    rng = np.random.default_rng(0)
    field = np.full((64, 64, 3), (232, 228, 236), np.float32) + rng.normal(0, 2, (64, 64, 3))
    yy, xx = np.mgrid[:64, :64]
    field[(yy - 32) ** 2 + (xx - 32) ** 2 < 15 ** 2] = (120, 60, 150)  # a violet nucleus
    neutral = np.clip(field, 0, 255).astype(np.uint8)
    yellow = np.clip(field * np.array([1.0, 0.95, 0.6], np.float32), 0, 255).astype(np.uint8)
    a, b = normalize(neutral, "background"), normalize(yellow, "background")
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4
    assert np.abs(yellow.astype(int) - neutral.astype(int)).mean() > 30
    bg = b[:5, :5].reshape(-1, 3).mean(0)
    assert np.ptp(bg) < 4 and 228 < bg.mean() < 242  # the background is neutral grey
    assert b[32, 32, 2] > b[32, 32, 1] + 40  # the nucleus stays violet
    g = background_gains(np.zeros((8, 8, 3), np.uint8))  # no background at all: bounded gains
    assert np.all(g <= 2.5)


def test_random_convolution_changes_the_chosen_crops_and_keeps_their_level():
    rng = np.random.default_rng(3)
    x = to_tensor(rng.integers(0, 255, (16, 32, 32, 3)).astype(np.uint8))
    assert torch.equal(random_convolution(x, np.random.default_rng(0), 0.0), x)
    y = random_convolution(x, np.random.default_rng(0), 1.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    changed = (y != x).flatten(1).any(1)
    assert changed.sum() >= 15  # a blend weight of exactly 1 is the only way to be left alone
    # each crop keeps about its own mean (the filtered crop is rescaled to it before the blend)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-4)
    # the same generator state gives the same batch: training stays reproducible
    assert torch.equal(random_convolution(x, np.random.default_rng(0), 1.0), y)
    half = random_convolution(x, np.random.default_rng(1), 0.5)
    assert 0 < (half != x).flatten(1).any(1).sum() < 16


def test_amplitude_mix_keeps_each_crops_phase_and_takes_anothers_amplitude():
    rng = np.random.default_rng(4)
    x = to_tensor(rng.integers(0, 255, (8, 32, 32, 3)).astype(np.uint8))
    assert torch.equal(amplitude_mix(x, np.random.default_rng(0), 0.0), x)
    y = amplitude_mix(x, np.random.default_rng(0), 1.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y != x).flatten(1).any(1).all()
    fx, fy = torch.fft.fft2(x), torch.fft.fft2(y)
    # the phase, where the edges lie, is the crop's own wherever the spectrum is not negligible
    strong = fx.abs() > 1e-3 * fx.abs().amax()
    dphase = torch.angle(fy * fx.conj())[strong]
    assert dphase.abs().max() < 1e-3
    # every amplitude lies between the crop's own and some other crop's of the batch
    lo = fx.abs().amin(0, keepdim=True) - 1e-3
    hi = fx.abs().amax(0, keepdim=True) + 1e-3
    assert ((fy.abs() >= lo) & (fy.abs() <= hi)).all()
    # a batch of one crop has nothing to mix with; the same generator state gives the same batch
    assert torch.equal(amplitude_mix(x[:1], np.random.default_rng(0), 1.0), x[:1])
    assert torch.equal(amplitude_mix(x, np.random.default_rng(0), 1.0), y)


def test_contrast_min_sets_the_lowest_contrast_drawn():
    ramp = np.tile(np.linspace(90, 160, 32, dtype=np.float32), (32, 1))
    grey = np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8)  # no saturation for the hue steps to move
    off = dict(hed_sigma=0.0, hue=0.0, grayscale_p=0.0, blur_p=0.0, lowres_p=0.0, jpeg_p=0.0, noise_p=0.0)

    def lowest(cfg):
        rng = np.random.default_rng(0)
        return min(photometric(grey, rng, cfg).astype(np.float32).std() / grey.std() for _ in range(300))

    # the per-channel gain moves the spread by up to 10 % either way
    assert 0.6 < lowest(AugmentConfig(**off)) < 0.75
    assert lowest(AugmentConfig(contrast_min=0.3, **off)) < 0.36

