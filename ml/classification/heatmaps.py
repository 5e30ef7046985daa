"""Per-cell explanations as arrays: attention maps of the attention models, Grad-CAM for any model.

``cell_heatmaps(model, x)`` returns ``N x H x W`` float maps in [0, 1] at the crop's size;
``overlay(crop, map)`` blends one onto its crop as an RGB uint8 image (also written as PNG).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ml.classification.registry import cam_target_layer


def _normalize(maps: torch.Tensor, size: int) -> np.ndarray:
    maps = F.interpolate(maps.float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    lo = maps.flatten(1).min(1).values.view(-1, 1, 1)
    hi = maps.flatten(1).max(1).values.view(-1, 1, 1)
    return ((maps - lo) / (hi - lo).clamp_min(1e-8)).cpu().numpy()


def _rescaled(maps: np.ndarray) -> np.ndarray:
    """Each of the ``N x H x W`` maps stretched to [0, 1]."""
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return (maps - lo) / np.maximum(hi - lo, 1e-8)


def attention_heatmaps(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The attention maps of an attention model, each scaled to [0, 1] and averaged over blocks
    (one forward pass, no gradients): deep maps say what, shallow ones where, sharply."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        model(x)
    model.train(was_training)
    return _rescaled(np.mean([_normalize(m, x.shape[-1]) for m in model.attention_maps()], axis=0))


def gradcam_heatmaps(model: torch.nn.Module, x: torch.Tensor, target: list[int] | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) for the predicted class, on the model's last feature stage,
    computed for the whole batch with the ``grad-cam`` library."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    targets = [ClassifierOutputTarget(int(t)) for t in target] if target is not None else None
    with GradCAM(model=model, target_layers=[cam_target_layer(model)]) as cam:
        maps = cam(input_tensor=x, targets=targets)
    maps = torch.from_numpy(np.asarray(maps, np.float32))[:, None]
    return _normalize(maps, x.shape[-1])


def cell_heatmaps(model: torch.nn.Module, x: torch.Tensor, method: str = "auto",
                  target: list[int] | None = None) -> np.ndarray:
    """``auto``: attention for models exposing ``attention_maps``, Grad-CAM otherwise (for the
    class ``target`` of each cell; default the predicted one). An ensemble gives its members'
    maps for its own answer, averaged."""
    from ml.classification.ensemble import Ensemble

    if len(x) == 0:
        return np.zeros((0, x.shape[-1], x.shape[-1]), np.float32)
    if isinstance(model, Ensemble):
        answer = target
        if answer is None:
            with torch.inference_mode():
                answer = model.eval()(x).argmax(1).tolist()
        return _rescaled(np.mean([cell_heatmaps(net, x, method, target=answer) for net in model.nets], axis=0))
    if method == "auto":
        method = "attention" if hasattr(model, "attention_maps") else "gradcam"
    if method == "attention":
        if not hasattr(model, "attention_maps"):
            raise ValueError(f"{type(model).__name__} exposes no attention maps; use gradcam")
        return attention_heatmaps(model, x)
    if method == "gradcam":
        return gradcam_heatmaps(model, x, target)
    raise ValueError(f"unknown heatmap method {method!r}; known: auto, attention, gradcam")


def overlay(crop: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (JET colours) onto an RGB uint8 crop of the same size."""
    h = cv2.resize(heatmap.astype(np.float32), (crop.shape[1], crop.shape[0]))
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(h, 0, 1)), cv2.COLORMAP_JET)[..., ::-1]
    return np.clip((1 - alpha) * crop.astype(np.float32) + alpha * colour, 0, 255).astype(np.uint8)


def save_png(path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG. Encoded here and written by Python, so that a file that
    cannot be written (a name too long, a full disk, no such folder) raises an OSError naming it;
    ``cv2.imwrite`` would only return False."""
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"cannot encode {path} as PNG")
    try:
        with open(path, "wb") as f:
            f.write(png.tobytes())
    except OSError as exc:  # a failed write or flush does not say which file
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
