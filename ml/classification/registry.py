"""Classifier registry and factory: our own architectures by name, any other name from timm."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# timm architectures the issue names; any other timm name works too.
TIMM_MODELS = ("resnet18", "resnet50_gn", "resnetv2_50x1_bit")


def register_classifier(name: str):
    def deco(fn: Callable[..., nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"classifier {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_classifiers() -> list[str]:
    """The architectures one can train (an ``ensemble`` is made of trained ones instead)."""
    _import_models()
    return sorted(n for n in _REGISTRY if n != "ensemble") + list(TIMM_MODELS)


def _import_models() -> None:
    from ml.classification import ensemble  # noqa: F401  (registers on import)
    from ml.classification.models import cbam, hybrid  # noqa: F401


def create_classifier(name: str, num_classes: int, pretrained: bool = False, **kw) -> nn.Module:
    """Build classifier ``name`` with ``num_classes`` outputs.

    Our own models are looked up first; other names go to ``timm.create_model`` (``pretrained``
    only downloads weights there; our models have none).
    """
    _import_models()
    if name in _REGISTRY:
        if pretrained:
            raise ValueError(f"{name!r} has no pretrained weights; train it from scratch")
        return _REGISTRY[name](num_classes=num_classes, **kw)
    import timm

    if not timm.is_model(name):
        known = ", ".join(list_classifiers())
        raise ValueError(f"unknown classifier {name!r}; known: {known} (or any timm model name)")
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kw)


def cam_target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: the model's own choice, else timm's last feature stage."""
    if hasattr(model, "cam_layer"):
        return model.cam_layer()
    info = getattr(model, "feature_info", None)
    if info is not None:
        name = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        return model.get_submodule(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution for Grad-CAM")
    return convs[-1]
