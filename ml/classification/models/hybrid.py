"""A convolution + self-attention hybrid: a convolutional stem turns the crop into a grid of
tokens, multi-head self-attention blocks mix them, a learned class token reads them out.

``model.attention_maps()`` returns, per block, the attention of the class token over the
grid, ``N x 1 x h x w`` averaged over heads; the last block's map is the cell's heatmap.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ml.classification.registry import register_classifier


def _conv_bn(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, drop: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        self.drop = nn.Dropout(drop)
        self.last: torch.Tensor | None = None  # N x heads x T x T

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        attn = attn.softmax(-1)
        self.last = attn.detach()
        y = (attn @ v).transpose(1, 2).reshape(n, t, d)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.mlp(self.norm2(x)))


class ConvAttentionNet(nn.Module):
    def __init__(self, num_classes: int, dim: int = 128, depth: int = 3, heads: int = 4,
                 stem=(32, 64), grid: int = 8, drop: float = 0.1, in_chans: int = 3):
        super().__init__()
        layers, cin = [], in_chans
        for w in stem:
            layers.append(_conv_bn(cin, w, 2))
            cin = w
        layers.append(_conv_bn(cin, dim, 2))
        self.stem = nn.Sequential(*layers)
        self.grid = grid
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, drop=drop) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._hw = (grid, grid)

    def forward(self, x):
        f = self.stem(x)
        if f.shape[-2:] != (self.grid, self.grid):
            f = F.adaptive_avg_pool2d(f, self.grid)
        self._hw = f.shape[-2:]
        tokens = f.flatten(2).transpose(1, 2) + self.pos
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x[:, 0]))

    def attention_maps(self) -> list[torch.Tensor]:
        h, w = self._hw
        maps = []
        for b in self.blocks:
            if b.last is not None:
                a = b.last[:, :, 0, 1:].mean(1)  # class token's attention over the grid
                maps.append(a.reshape(-1, 1, h, w))
        return maps

    def cam_layer(self) -> nn.Module:
        return self.stem[-1]


@register_classifier("conv_attention")
def conv_attention(num_classes: int, **kw) -> ConvAttentionNet:
    return ConvAttentionNet(num_classes, **kw)
