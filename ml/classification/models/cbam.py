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


class CBAMBlock(nn.Module):
    """Residual basic block followed by CBAM."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
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
                 depths=(1, 1, 1, 1)):
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} must have the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                blocks.append(CBAMBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(drop)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x):
        return self.blocks(self.stem(x))

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
