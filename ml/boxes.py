"""Axis-aligned boxes in image pixels, shared by localization, classification and analysis."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Box:
    """A box ``[x0, y0, x1, y1)`` in pixels of the original image, with a label and a score.
    ``difficult``: a ground-truth box its annotator marked so (Pascal VOC's flag): scoring leaves it
    out, neither a cell to find nor a false detection where one is found."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = "WBC"
    score: float = 1.0
    difficult: bool = False

    @property
    def width(self) -> float:
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return self.width * self.height

    def as_list(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]

    def iou(self, other: "Box") -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def clip(self, width: int, height: int) -> "Box":
        return replace(
            self,
            x0=min(max(self.x0, 0.0), width),
            y0=min(max(self.y0, 0.0), height),
            x1=min(max(self.x1, 0.0), width),
            y1=min(max(self.y1, 0.0), height),
        )

    def scaled(self, factor: float) -> "Box":
        """The box with its width and height multiplied by ``factor``, about the same centre."""
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        hw, hh = self.width * factor / 2, self.height * factor / 2
        return replace(self, x0=cx - hw, y0=cy - hh, x1=cx + hw, y1=cy + hh)

    def translate(self, dx: float, dy: float) -> "Box":
        return replace(self, x0=self.x0 + dx, y0=self.y0 + dy, x1=self.x1 + dx, y1=self.y1 + dy)
