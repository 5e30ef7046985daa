"""A compact residual CNN with CBAM blocks (Woo et al., 2018): channel then spatial attention.

``model.attention_maps()`` returns the spatial attention of the last forward pass, one map
per CBAM block, ``N x 1 x h x w`` in [0, 1]; the deepest is the cell's heatmap.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ml.classification.registry import register_classifier


class ChannelAttention(nn.Module):
    def __init__(self, ch: int, reduction: int = 8):
        super().__init__()
        hidden = max(8, ch // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(ch, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, ch, 1))

    def forward(self, x):
        a = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(a)


class SpatialAttention(nn.Module):
    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        self.last: torch.Tensor | None = None

    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        a = torch.sigmoid(self.conv(s))
        self.last = a.detach()
        return x * a


class MixStyle(nn.Module):
    """MixStyle (Zhou et al., ICLR 2021), a domain-generalization layer active in training only:
    with probability ``p`` a batch's per-channel feature statistics (mean and standard deviation
    over the image, the "style": stain, lamp, camera) are mixed with those of other cells of the
    batch, so later layers learn from cells in styles no single lab produced."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x):
        if not self.training or self.p <= 0 or x.shape[0] < 2 or torch.rand(()) > self.p:
            return x
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((x.shape[0], 1, 1, 1)).to(x)
        perm = torch.randperm(x.shape[0], device=x.device)
        mu2 = lam * mu + (1 - lam) * mu[perm]
        sig2 = lam * sig + (1 - lam) * sig[perm]
        return (x - mu) / sig * sig2 + mu2


class IBN(nn.Module):
    """Instance and batch normalization side by side (IBN-a; Pan et al., ECCV 2018): the first half
    of the channels is normalized per cell (removing that cell's own contrast and colour level, the
    "style" another lab changes), the rest per batch (keeping what tells the classes apart)."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        self.inorm = nn.InstanceNorm2d(self.half, affine=True)
        self.bn = nn.BatchNorm2d(channels - self.half)

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.inorm(a.contiguous()), self.bn(b.contiguous())], dim=1)


def _norm(channels: int, ibn: bool) -> nn.Module:
    return IBN(channels) if ibn else nn.BatchNorm2d(channels)


class CBAMBlock(nn.Module):
    """Residual basic block followed by CBAM."""

    def __init__(self, cin: int, cout: int, stride: int, ibn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(cout, ibn)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.ca = ChannelAttention(cout)
        self.sa = SpatialAttention()
        self.skip = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        y = self.sa(self.ca(y))
        return F.relu(y + self.skip(x), inplace=True)


class CBAMNet(nn.Module):
    def __init__(self, num_classes: int, widths=(32, 64, 128, 256), drop: float = 0.2, in_chans: int = 3,
                 depths=(1, 1, 1, 1), mixstyle: float = 0.0, ibn: bool = False):
        """``ibn``: instance + batch normalization (:class:`IBN`) in the stem and the first
        normalization of every stage but the last, as IBN-Net-a does."""
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} must have the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False), _norm(widths[0], ibn), nn.ReLU(inplace=True)
        )
        blocks, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                blocks.append(CBAMBlock(cin, w, 2 if i > 0 and j == 0 else 1, ibn=ibn and i < len(widths) - 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        # MixStyle after the stem and the first stage (where features carry style, not yet class)
        self.mix = nn.ModuleList([MixStyle(mixstyle), MixStyle(mixstyle)]) if mixstyle > 0 else None
        self.first_stage = depths[0]
        self.drop = nn.Dropout(drop)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x):
        x = self.stem(x)
        if self.mix is None:
            return self.blocks(x)
        x = self.mix[0](x)
        x = self.mix[1](self.blocks[:self.first_stage](x))
        return self.blocks[self.first_stage:](x)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self.head(self.drop(x))

    def attention_maps(self) -> list[torch.Tensor]:
        return [b.sa.last for b in self.blocks if b.sa.last is not None]

    def cam_layer(self) -> nn.Module:
        return self.blocks[-1]


@register_classifier("cbam_cnn")
def cbam_cnn(num_classes: int, **kw) -> CBAMNet:
    return CBAMNet(num_classes, **kw)


@register_classifier("cbam_cnn_small")
def cbam_cnn_small(num_classes: int, **kw) -> CBAMNet:
    """Half the width: the served default, fast on two CPU cores."""
    return CBAMNet(num_classes, widths=(16, 32, 64, 128), **kw)
