"""Normalization statistics of the sample at hand (covariate-shift adaptation at inference).

A network with batch normalization standardizes each layer by the mean and variance it saw in
training. Another lab's cells (another stain, camera, blur) move those statistics, and every layer
then works off-centre. :func:`sample_normalized` returns a copy of the network whose statistics
are a blend of the trained ones and those of the sample's own cells, the trained ones counting as
``strength`` cells (Schneider et al., "Improving robustness against common corruptions by
covariate shift adaptation", NeurIPS 2020): a slide of ``n`` cells weighs its own statistics by
``n / (n + strength)``, so one or two cells change little. No label is used and no weight is
learned; the copy serves that sample only.

A large sample (a scan's thousands of cells) lends its statistics through a random subset of
:data:`STATISTICS_CELLS` of its cells (:func:`statistics_subset`): a mean over hundreds of cells is
already as precise as the blend needs, and the sample keeps its full weight ``n``, so adapting
costs about one extra pass over that many cells, not two over the whole sample.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def sample_normalized(model: nn.Module, batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]], n: int,
                      strength: float) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose batch-norm statistics blend the trained ones with
    those of ``batches`` (the sample's ``n`` cells, as the model's input), weight ``n / (n + strength)``.

    A batch may come as ``(x, counts)``: the batch that holds ``x[i]`` ``counts[i]`` times (a draw
    with replacement), passed through the network once per distinct cell (:func:`_counted_forward`).
    A model without batch normalization (e.g. GroupNorm ResNets) or an empty sample is returned as
    an unchanged copy."""
    if strength < 0:
        raise ValueError(f"normalization strength must be >= 0, got {strength}")
    adapted = copy.deepcopy(model).eval()
    layers = batchnorm_layers(adapted)
    if not layers or n <= 0:
        return adapted
    trained = [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum) for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches: the sample's own statistics
        bn.train()
    with torch.no_grad():
        for batch in batches:
            if isinstance(batch, tuple):
                _counted_forward(adapted, layers, *batch, [m for m, _, _ in trained])
            else:
                adapted(batch)
    w = n / (n + strength)
    for bn, (mean, var, momentum) in zip(layers, trained):
        bn.running_mean.mul_(w).add_(mean, alpha=1 - w)
        bn.running_var.mul_(w).add_(var, alpha=1 - w)
        bn.momentum = momentum
        bn.eval()
    return adapted


def _counted_forward(model: nn.Module, layers: list[nn.modules.batchnorm._BatchNorm], x: torch.Tensor,
                     counts: torch.Tensor, centres: list[torch.Tensor]) -> None:
    """One training-mode pass of the batch that holds ``x[i]`` ``counts[i]`` times, through each
    distinct cell once: every batch-norm layer normalizes by, and accumulates, the counted mean and
    variance (equal to the repeated batch's; the running variance unbiased over its size)."""
    counts = counts.to(x.device)
    if not all(isinstance(bn, nn.BatchNorm2d) for bn in layers):  # other layers get the repeated batch itself
        model(torch.repeat_interleave(x, counts, dim=0))
        return
    w = counts.to(torch.float64).view(-1, 1)

    def counted(bn, centre, inp):
        # sums per cell and channel (of the values and their squares, about the trained mean, so that
        # a channel whose mean is far from zero keeps its variance's precision), then weighed by the
        # counts in double precision
        size = float(counts.sum()) * inp.shape[2] * inp.shape[3]
        d = inp - centre.view(1, -1, 1, 1)
        s1 = (d.sum((2, 3)).double() * w).sum(0) / size
        s2 = ((d * d).sum((2, 3)).double() * w).sum(0) / size
        mean = (s1 + centre.double()).to(inp.dtype)
        var = (s2 - s1 * s1).clamp_min(0.0).to(inp.dtype)
        bn.num_batches_tracked.add_(1)
        f = 1.0 / float(bn.num_batches_tracked)  # momentum None: the cumulative average of the batches
        bn.running_mean.mul_(1 - f).add_(mean, alpha=f)
        bn.running_var.mul_(1 - f).add_(var * (size / max(size - 1.0, 1.0)), alpha=f)
        return F.batch_norm(inp, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)

    try:
        for bn, centre in zip(layers, centres):
            bn.forward = (lambda inp, _bn=bn, _c=centre: counted(_bn, _c, inp))  # for this pass only
        model(x)
    finally:
        for bn in layers:
            vars(bn).pop("forward", None)  # back to the class's own forward


STATISTICS_CELLS = 512  # cells of a sample that its statistics are taken from, at most


def statistics_subset(n: int, cells: int | None = STATISTICS_CELLS, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the cells of an ``n``-cell sample its statistics are taken from: all
    of them up to ``cells``, else ``cells`` drawn at random without replacement (seeded, so one
    sample always gets the same statistics). ``cells=None``: all."""
    if cells is not None and cells < 1:
        raise ValueError(f"statistics need at least one cell, got {cells}")
    if cells is None or n <= cells:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cells, replace=False))


def balanced_draw(probabilities: np.ndarray, draws: int = 256, seed: int = 0) -> np.ndarray:
    """Indices of a sample's cells drawn with replacement so that the classes the model sees in
    them are equally represented: cell ``i`` weighs ``sum_c p_i(c) / f_c`` (``f``: the mean of
    ``probabilities``, the model's answers as trained on balanced classes), i.e. a class is chosen
    at random, then a cell by its probability of that class (exactly balanced where the answers
    are confident; diffuse ones lend weight to other classes); ``max(draws, n)`` draws. The statistics of a balanced draw do not follow the sample's class mix (a slide of
    75 % lymphocytes), only its look."""
    p = np.asarray(probabilities, np.float64)
    n = len(p)
    if n == 0:
        return np.zeros(0, np.int64)
    f = np.clip(p.mean(0), 1e-12, None)
    w = (p / f).sum(1)
    return np.random.default_rng(seed).choice(n, size=max(draws, n), p=w / w.sum())
