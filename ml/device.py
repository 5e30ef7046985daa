"""Where the models run: the GPU when torch sees one, the CPU otherwise.

Every command that trains or runs a model takes ``--device`` and the library functions a
``device`` argument; when they are not given, the ``LEUKOLAB_DEVICE`` environment variable
decides (``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``auto``, the default, takes the first GPU when
there is one). The worker loads its models the same way, so a worker on a GPU machine uses it.
"""
from __future__ import annotations

import os

import torch

ENV = "LEUKOLAB_DEVICE"


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """The device named by ``spec`` (or ``$LEUKOLAB_DEVICE``, or ``auto``); a clear ``ValueError``
    for a name torch does not know or a GPU this machine does not have."""
    if isinstance(spec, torch.device):
        return spec
    text = str(spec or os.environ.get(ENV) or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {text!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} asked for, but torch sees no GPU on this machine (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def usable_cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores this process may use, less one for the process driving the GPU."""
    return max(1, usable_cores() - 1)
